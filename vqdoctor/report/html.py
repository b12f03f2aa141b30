"""The HTML report: one self-contained file (inline CSS, pictures as base64 PNG data URIs, no
script, no external resource) with the terminal report's content. Every string from the Report is
escaped: codebook names and keys come from users' files."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from vqdoctor.report.json_out import atomic_write_bytes
from vqdoctor.report.plots import figure_png, iter_plots
from vqdoctor.report.schema import Report
from vqdoctor.report.text import (
    MODE_HEADERS,
    PAIR_HEADERS,
    SUMMARY_HEADERS,
    all_notes,
    codebook_facts,
    codebook_title,
    embeddings_facts,
    header_lines,
    mode_rows,
    pair_rows,
    sorted_verdicts,
    summary_cells,
    summary_rows,
    verdict_measure,
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1em; color: #1b1b1b; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 1em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.ok { background: #e3f4e1; color: #1d5e1a; } .warn { background: #fff3cd; color: #7a5a00; }
.fail { background: #fbe0e0; color: #8f1b1b; font-weight: 600; }
.insufficient { background: #e0f0fb; color: #1b4f8f; }
code { background: #f5f5f5; padding: 0.1em 0.3em; border-radius: 3px; word-break: break-all; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
"""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, num_from: int = 1,
           row_classes: Sequence[str | None] | None = None, cell_classes: Sequence[Sequence[str | None]] | None = None) -> str:  # fmt: skip
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
            out.append(f"<td{attr}>{_e(cell)}</td>")
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
    return _table(SUMMARY_HEADERS, cells, cell_classes=classes)


def _verdicts(report: Report) -> str:
    if not report.verdicts:
        return "<p>No checks applied.</p>"
    out = ["<table><thead><tr><th>status</th><th>check</th><th>codebook</th><th>value</th>"
           "<th>why</th><th>remedy</th></tr></thead><tbody>"]  # fmt: skip
    for v in sorted_verdicts(report):
        remedy = f"<code>{_e(v.remedy)}</code>" if v.remedy else ""
        out.append(
            f'<tr><td class="{_e(v.status)}">{_e(v.status.upper())}</td><td>{_e(v.check)}</td>'
            f"<td>{_e(v.codebook if v.codebook is not None else '(model)')}</td>"
            f"<td>{_e(verdict_measure(v))}</td><td>{_e(v.message)}</td><td>{remedy}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _diagnosis(report: Report) -> str:
    out = ["<ul>"]
    for f in report.diagnosis:
        remedy = f"<br>remedy: <code>{_e(f.remedy)}</code>" if f.remedy else ""
        out.append(f'<li><span class="{_e(f.status)}">{_e(f.status.upper())}</span> '
                   f"<strong>{_e(f.collapse)}</strong>: {_e(f.summary)}{remedy}</li>")
    out.append("</ul>")
    return "".join(out)


def _img(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def render_html(report: Report, *, pictures: bool = True) -> str:
    """The whole report as one self-contained HTML document (``pictures=False`` leaves the
    embedded PNGs out, e.g. for quick tests)."""
    figures: dict[str, list[str]] = {}  # codebook stem or "stack"/"projection" -> <figure> blocks
    if pictures:
        for stem, caption, draw in iter_plots(report):
            fig = draw()
            key = "projection" if stem == "projection" else ("stack" if stem.startswith("stack-") else stem.split("-", 1)[0])
            figures.setdefault(key, []).append(_img(figure_png(fig), caption))
            fig.clear()
    width = max(2, len(str(len(report.codebooks))))

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vqdoctor report: {_e(report.checkpoint.path)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>vqdoctor report: <code>{_e(report.checkpoint.path)}</code></h1>",
        _facts(header_lines(report)),
        "<h2>Summary</h2>",
        _summary(report),
        *(["<h2>Diagnosis</h2>", _diagnosis(report)] if report.diagnosis else []),
        "<h2>Verdicts</h2>",
        _verdicts(report),
        "<h2>Codebooks</h2>",
    ]
    for i, cb in enumerate(report.codebooks, start=1):
        parts.append(f'<h3 id="codebook-{i}">{_e(codebook_title(cb))}</h3>')
        parts.append(_facts(codebook_facts(cb)))
        if cb.tokens_collapse is not None:
            tc = cb.tokens_collapse
            rows = mode_rows(tc)
            parts.append(f"<p>Tokens collapse: {_e(tc.modes)} modes ({_e(tc.mode_source)}).</p>")
            parts.append(
                _table(MODE_HEADERS, [c for c, _ in rows], row_classes=["fail" if starved else None for _, starved in rows])
            )
        parts.extend(figures.get(f"{i:0{width}d}", []))
    if figures.get("stack"):
        parts.append("<h2>Residual stacks</h2>")
        parts.extend(figures["stack"])
    ec = report.embeddings_collapse
    if ec is not None or figures.get("projection"):
        parts.append("<h2>Embeddings collapse</h2>")
        if ec is not None:
            parts.append(_facts(embeddings_facts(ec)))
            if ec.merged_pairs:
                parts.append(_table(PAIR_HEADERS, pair_rows(ec)))
        parts.extend(figures.get("projection", []))
    notes = all_notes(report)
    if notes:
        parts.append("<h2>Notes</h2><ul>")
        parts.extend(f"<li>{_e(n)}</li>" for n in notes)
        parts.append("</ul>")
    parts.append(f"<p><small>{_e(report.schema)} &middot; vqdoctor {_e(report.vqdoctor_version or '?')}</small></p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(report: Report, path: str | Path) -> None:
    """Write ``render_html(report)`` to ``path`` atomically."""
    atomic_write_bytes(path, render_html(report).encode("utf-8"))
