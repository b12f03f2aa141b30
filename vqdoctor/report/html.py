"""The HTML report: one self-contained file (inline CSS, pictures as base64 PNG data URIs, no
script, no external resource) with the terminal report's content. Every string from the Report is
escaped: codebook names and keys come from users' files."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from vqdoctor.report.json_out import atomic_write_bytes
from vqdoctor.report.plots import DPI, check_dpi, figure_png, plots_by_section
from vqdoctor.report.schema import CodebookReport, Report, Verdict
from vqdoctor.report.text import (
    MODE_HEADERS,
    PAIR_HEADERS,
    STATUS_ORDER,
    SUMMARY_HEADERS,
    all_notes,
    codebook_facts,
    codebook_title,
    codebook_verdicts,
    embeddings_facts,
    header_lines,
    mode_rows,
    pair_rows,
    sorted_verdicts,
    summary_cells,
    summary_rows,
    verdict_measure,
    verdict_summary,
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto;
       max-width: 84em; padding: 0 1em; color: #1b1b1b; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; } h4 { font-size: 0.95em; margin: 0.8em 0 0.3em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 1em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.ok { background: #e3f4e1; color: #1d5e1a; } .warn { background: #fff3cd; color: #7a5a00; }
.fail { background: #fbe0e0; color: #8f1b1b; font-weight: 600; }
.insufficient { background: #e0f0fb; color: #1b4f8f; }
.badge { display: inline-block; min-width: 3.2em; text-align: center; border-radius: 3px; padding: 0 0.3em;
         font-size: 0.85em; font-weight: 600; }
code { background: #f5f5f5; padding: 0.1em 0.3em; border-radius: 3px; word-break: break-all; }
nav.toc { background: #fafafa; border: 1px solid #ddd; border-radius: 4px; padding: 0.4em 1.2em; margin: 1em 0; }
nav.toc h2 { margin: 0.3em 0; border: 0; font-size: 1.05em; }
nav.toc ol { margin: 0.2em 0; padding-left: 1.3em; } nav.toc a { text-decoration: none; }
nav.toc .cols { columns: 2 24em; }
details.codebook { border: 1px solid #ddd; border-left: 5px solid #bbb; border-radius: 4px; margin: 0.6em 0;
                   padding: 0 0.9em; }
details.codebook.is-fail { border-left-color: #c62828; } details.codebook.is-warn { border-left-color: #e0a800; }
details.codebook.is-ok { border-left-color: #2e7d32; } details.codebook.is-insufficient { border-left-color: #1b6fbf; }
ul.remedies { margin: 0.3em 0; padding-left: 1.3em; }
details.codebook > summary { cursor: pointer; padding: 0.5em 0; font-weight: 600; }
details.codebook > summary .verdicts { font-weight: normal; color: #555; }
details.all > summary { cursor: pointer; font-weight: 600; padding: 0.3em 0; }
section.stack { border-top: 1px solid #eee; margin-top: 1em; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 30em), 1fr)); gap: 0.8em;
           align-items: start; }
.figures figure.wide { grid-column: 1 / -1; } .figures .modes h4 { margin-top: 0.2em; }
figure { margin: 0.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
"""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, num_from: int = 1,
           row_classes: Sequence[str | None] | None = None, cell_classes: Sequence[Sequence[str | None]] | None = None,
           first_links: Sequence[str] | None = None) -> str:  # fmt: skip
    """A table; ``first_links``: per row, the in-page anchor the first cell links to."""
    out = ["<table>", "<thead><tr>", *[f"<th>{_e(h)}</th>" for h in headers], "</tr></thead><tbody>"]
    for r, row in enumerate(rows):
        cls = row_classes[r] if row_classes else None
        out.append(f'<tr class="{_e(cls)}">' if cls else "<tr>")
        for c, cell in enumerate(row):
            classes = []
            if c >= num_from:
                classes.append("num")
            if cell_classes and cell_classes[r][c]:
                classes.append(str(cell_classes[r][c]))
            attr = f' class="{_e(" ".join(classes))}"' if classes else ""
            text = f'<a href="#{_e(first_links[r])}">{_e(cell)}</a>' if first_links and c == 0 else _e(cell)
            out.append(f"<td{attr}>{text}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _facts(facts: Iterable[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    return f'<dl class="facts">{items}</dl>'


def _summary(report: Report) -> str:
    rows = summary_rows(report)
    cells = [summary_cells(r) for r in rows]
    last = len(SUMMARY_HEADERS) - 1
    classes = [[r.worst if c == last else None for c in range(len(SUMMARY_HEADERS))] for r in rows]
    links = [f"codebook-{i}" for i in range(1, len(rows) + 1)]  # one summary row per codebook, in order
    return _table(SUMMARY_HEADERS, cells, cell_classes=classes, first_links=links)


def _verdicts(verdicts: Sequence[Verdict], *, with_codebook: bool = True, remedies: bool = True) -> str:
    """A verdict table, worst first (``remedies=False``: without the remedy column, see
    :func:`_remedies`)."""
    if not verdicts:
        return "<p>No checks applied.</p>"
    head = "<th>codebook</th>" if with_codebook else ""
    tail = "<th>remedy</th>" if remedies else ""
    out = [f"<table><thead><tr><th>status</th><th>check</th>{head}<th>value</th>"
           f"<th>why</th>{tail}</tr></thead><tbody>"]  # fmt: skip
    for v in sorted(verdicts, key=lambda v: STATUS_ORDER[v.status]):
        remedy = (f"<td><code>{_e(v.remedy)}</code></td>" if v.remedy else "<td></td>") if remedies else ""
        cb = f"<td>{_e(v.codebook if v.codebook is not None else '(model)')}</td>" if with_codebook else ""
        out.append(
            f'<tr><td class="{_e(v.status)}">{_e(v.status.upper())}</td><td>{_e(v.check)}</td>{cb}'
            f"<td>{_e(verdict_measure(v))}</td><td>{_e(v.message)}</td>{remedy}</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _remedies(verdicts: Sequence[Verdict]) -> str:
    """Each distinct remedy of the failing or warning checks once, with the checks it answers."""
    by: dict[str, list[str]] = {}
    for v in sorted(verdicts, key=lambda v: STATUS_ORDER[v.status]):
        if v.remedy and v.status in ("fail", "warn"):
            by.setdefault(v.remedy, []).append(v.check)
    if not by:
        return ""
    items = "".join(f"<li><code>{_e(r)}</code> &mdash; for {_e(', '.join(checks))}</li>" for r, checks in by.items())
    return f'<p>Remedies:</p><ul class="remedies">{items}</ul>'


def _diagnosis(report: Report) -> str:
    out = ["<ul>"]
    for f in report.diagnosis:
        remedy = f"<br>remedy: <code>{_e(f.remedy)}</code>" if f.remedy else ""
        out.append(f'<li><span class="{_e(f.status)}">{_e(f.status.upper())}</span> '
                   f"<strong>{_e(f.collapse)}</strong>: {_e(f.summary)}{remedy}</li>")
    out.append("</ul>")
    return "".join(out)


def _img(png: bytes, caption: str, *, wide: bool = False) -> str:
    data = base64.b64encode(png).decode("ascii")
    cls = ' class="wide"' if wide else ""
    return (
        f'<figure{cls}><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _figures(blocks: Sequence[str]) -> list[str]:
    return [f'<div class="figures">{"".join(blocks)}</div>'] if blocks else []


def _badge(status: str | None) -> str:
    return f'<span class="badge {_e(status)}">{_e(status.upper())}</span>' if status else '<span class="badge">-</span>'


def _codebook_section(report: Report, i: int, cb: CodebookReport, figures: Sequence[str]) -> str:
    """One codebook (or RVQ level) as a collapsible section, open when a check fails: its facts,
    its pictures and per-mode table side by side, its verdicts (each remedy once)."""
    verdicts = codebook_verdicts(report, cb)
    text, worst = verdict_summary(verdicts)
    is_open = " open" if worst == "fail" else ""
    cls = f"codebook is-{worst}" if worst else "codebook"
    parts = [f'<details id="codebook-{i}" class="{_e(cls)}"{is_open}>',
             f'<summary>{_badge(worst)} {_e(codebook_title(cb))} <span class="verdicts">({_e(text)})</span></summary>',
             _facts(codebook_facts(cb))]  # fmt: skip
    blocks = list(figures)
    if cb.tokens_collapse is not None:  # the per-mode table beside the allocation pictures it explains
        tc = cb.tokens_collapse
        rows = mode_rows(tc)
        blocks.append(f'<div class="modes"><h4>Tokens collapse: {_e(tc.modes)} modes ({_e(tc.mode_source)})</h4>'
                      + _table(MODE_HEADERS, [c for c, _ in rows],
                               row_classes=["fail" if starved else None for _, starved in rows]) + "</div>")  # fmt: skip
    parts += _figures(blocks)
    if verdicts:
        parts += ["<h4>Verdicts</h4>", _verdicts(verdicts, with_codebook=False, remedies=False), _remedies(verdicts)]
    parts.append("</details>")
    return "\n".join(parts)


def _groups(report: Report) -> list[tuple[str, list[tuple[int, CodebookReport]]]]:
    """Codebooks by stack, in the report's order (a stack where its first codebook is)."""
    groups: dict[str, list[tuple[int, CodebookReport]]] = {}
    for i, cb in enumerate(report.codebooks, start=1):
        groups.setdefault(cb.stack, []).append((i, cb))
    return list(groups.items())


def _toc(report: Report, groups: Sequence[tuple[str, Sequence[tuple[int, CodebookReport]]]], *,
         embeddings: bool, notes: bool) -> str:  # fmt: skip
    def entry(i: int, cb: CodebookReport, multi: bool) -> str:
        _, worst = verdict_summary(codebook_verdicts(report, cb))
        level = f" (level {cb.level})" if multi else ""
        return f'<li>{_badge(worst)} <a href="#codebook-{i}">{_e(cb.name)}</a>{_e(level)}</li>'

    items = ['<li><a href="#summary">Summary</a></li>']
    if report.diagnosis:
        items.append('<li><a href="#diagnosis">Diagnosis</a></li>')
    books = []
    for n, (stack, levels) in enumerate(groups):
        if len(levels) > 1:
            inner = "".join(entry(i, cb, True) for i, cb in levels)
            books.append(f'<li><a href="#stack-{n}">stack {_e(stack)}: {len(levels)} levels</a><ol>{inner}</ol></li>')
        else:
            books.extend(entry(i, cb, False) for i, cb in levels)
    cols = ' class="cols"' if len(report.codebooks) > 8 else ""
    items.append(f'<li><a href="#codebooks">Codebooks</a><ol{cols}>{"".join(books)}</ol></li>')
    if embeddings:
        items.append('<li><a href="#embeddings">Embeddings collapse</a></li>')
    items.append('<li><a href="#verdicts">All verdicts</a></li>')
    if notes:
        items.append('<li><a href="#notes">Notes</a></li>')
    return f'<nav class="toc"><h2>Contents</h2><ol>{"".join(items)}</ol></nav>'


def render_html(report: Report, *, pictures: bool = True, dpi: int = DPI) -> str:
    """The whole report as one self-contained HTML document (``pictures=False`` leaves the
    embedded PNGs out, e.g. for quick tests; ``dpi``: their resolution). A table of contents,
    the summary and diagnosis, then each codebook (RVQ levels under their stack) in a collapsible
    section, open where a check fails, with its verdicts and its pictures; model-wide checks and
    the 2-D picture under embeddings collapse; every verdict in one table at the end."""
    check_dpi(dpi)
    figures: dict[tuple[str, object], list[str]] = {}
    if pictures:
        for key, stem, caption, draw in plots_by_section(report):
            fig = draw()
            wide = stem == "projection"
            figures.setdefault(key, []).append(_img(figure_png(fig, dpi), caption, wide=wide))
            fig.clear()
    groups = _groups(report)
    ec = report.embeddings_collapse
    model_wide = [v for v in report.verdicts if v.codebook is None]
    embeddings = ec is not None or bool(figures.get(("projection", None))) or bool(model_wide)
    notes = all_notes(report)

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vqdoctor report: {_e(report.checkpoint.path)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>vqdoctor report: <code>{_e(report.checkpoint.path)}</code></h1>",
        _facts(header_lines(report)),
        _toc(report, groups, embeddings=embeddings, notes=bool(notes)),
        '<h2 id="summary">Summary</h2>',
        _summary(report),
        *(['<h2 id="diagnosis">Diagnosis</h2>', _diagnosis(report)] if report.diagnosis else []),
        '<h2 id="codebooks">Codebooks</h2>',
    ]
    for n, (stack, levels) in enumerate(groups):
        if len(levels) > 1:
            parts.append(f'<section class="stack" id="stack-{n}"><h3>Stack {_e(stack)}: {len(levels)} levels</h3>')
            parts += _figures(figures.get(("stack", stack), []))
        parts.extend(_codebook_section(report, i, cb, figures.get(("codebook", i), [])) for i, cb in levels)
        if len(levels) > 1:
            parts.append("</section>")
    if embeddings:
        parts.append('<h2 id="embeddings">Embeddings collapse</h2>')
        if ec is not None:
            parts.append(_facts(embeddings_facts(ec)))
            if ec.merged_pairs:
                parts.append(_table(PAIR_HEADERS, pair_rows(ec)))
        if model_wide:
            parts += ["<h4>Model-wide checks</h4>", _verdicts(model_wide, with_codebook=False)]
        parts += _figures(figures.get(("projection", None), []))
    n_verdicts = len(report.verdicts)
    parts.append(f'<details class="all" id="verdicts"><summary>All verdicts ({n_verdicts})</summary>')
    parts.append(_verdicts(sorted_verdicts(report)))
    parts.append("</details>")
    if notes:
        parts.append('<h2 id="notes">Notes</h2><ul>')
        parts.extend(f"<li>{_e(n)}</li>" for n in notes)
        parts.append("</ul>")
    parts.append(f"<p><small>{_e(report.schema)} &middot; vqdoctor {_e(report.vqdoctor_version or '?')}</small></p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(report: Report, path: str | Path, *, dpi: int = DPI) -> None:
    """Write ``render_html(report, dpi=dpi)`` to ``path`` atomically."""
    atomic_write_bytes(path, render_html(report, dpi=dpi).encode("utf-8"))
