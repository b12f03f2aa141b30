"""The terminal report (rich). By default compact: the summary table (one row per codebook, one
per level of a stack), the diagnosis with one remedy per finding, one line per failing check and
where to look next. ``verbose=True`` adds every detail: the header, each codebook's facts and
per-mode table, every verdict with its remedy, and the notes.

Everything shown is read from the Report; the words and numbers come from ``report/text.py``
(shared with the HTML report). Works without colour (``NO_COLOR``: statuses are words, not just
colours) and on narrow terminals (numbers abbreviated, cells wrap, check lines cropped).
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vqdoctor.core.results import TokensCollapse
from vqdoctor.report.schema import CodebookReport, Report, Verdict
from vqdoctor.report.text import (
    MODE_HEADERS,
    NONE,
    PAIR_HEADERS,
    STATUS_ORDER,
    SummaryRow,
    all_notes,
    codebook_facts,
    codebook_title,
    embeddings_facts,
    fmt_check_value,
    fmt_num,
    fmt_pct,
    header_lines,
    mode_rows,
    pair_rows,
    shell_lines,
    sorted_verdicts,
    summary_rows,
    verdict_measure,
)

__all__ = ["STATUS_STYLE", "fmt_num", "fmt_pct", "render_terminal"]

STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "insufficient": "cyan"}


def short_count(n: int) -> str:
    """A count for a narrow cell: 1,024 as it is, 16,384 -> '16.4k', 2,500,000 -> '2.5M'."""
    if n < 10_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1e3:.3g}k"
    return f"{n / 1e6:.3g}M"


def _status(status: str | None, text: str | None = None) -> Text:
    if status is None:
        return Text(text or NONE)
    return Text(text if text is not None else status.upper(), style=STATUS_STYLE[status])


def _facts_grid(facts: list[tuple[str, str]]) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for label, text in facts:
        grid.add_row(Text(label), Text(text))
    return grid


def _size_dim(cb: CodebookReport) -> str:
    k, d = short_count(cb.size), short_count(cb.dim)
    return f"{k} x {d}" if len(k) + len(d) <= 6 else f"{k}\nx {d}"


def _ema_dead(cb: CodebookReport) -> str:
    e = cb.ema
    if e is None or not e.is_count or e.dead_codes_relative is None:
        return NONE
    dead, k = short_count(e.dead_codes_relative), short_count(cb.size)
    return f"{dead}/{k}" if len(dead) + len(k) <= 5 else f"{dead}\n/{k}"


def _used(row: SummaryRow, cb: CodebookReport) -> str:
    return row.used if cb.usage is None else f"{row.used}\n{short_count(cb.usage.dead_codes)} dead"


def _rank(cb: CodebookReport) -> str:
    g = cb.geometry
    return NONE if g is None else f"{short_count(g.numerical_rank)}/{fmt_num(g.effective_rank)}"


# Terminal summary columns: (header, cell, minimum width); two facts per cell and abbreviated
# counts (16.4k) keep the table inside 80 columns at any K.
_TERMINAL_SUMMARY = (
    ("K x d", lambda r, cb: _size_dim(cb), 5),
    ("used\n(dead)", _used, 8),
    ("perpl.\n(of K)", lambda r, cb: f"{r.perplexity}\n{r.normalized_perplexity}" if r.perplexity != NONE else NONE, 6),
    ("MSE\n(rel.)", lambda r, cb: f"{r.mse}\n({r.relative_mse})" if r.mse != NONE else NONE, 8),
    ("EMA\ndead", lambda r, cb: _ema_dead(cb), 4),
    ("rank\n/eff.", lambda r, cb: _rank(cb), 4),
    ("alloc.\nTV", lambda r, cb: r.allocation_tv, 5),
)


def _summary_table(report: Report, *, short_names: bool) -> Table:
    c = report.checkpoint
    table = Table(
        title=Text(f"vqdoctor: {c.path}"),
        caption=Text(f"data: {report.data.source}"),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    table.add_column("#" if short_names else "codebook", overflow="fold")
    for header, _, width in _TERMINAL_SUMMARY:
        table.add_column(header, justify="right", min_width=width, overflow="fold")
    table.add_column("verdicts", overflow="fold", min_width=6)
    for i, (row, cb) in enumerate(zip(summary_rows(report), report.codebooks, strict=True), start=1):
        name = f"#{i}" if short_names else row.name
        if row.level:
            name += f"\n{row.level}"
        cells = [Text(name), *[Text(cell(row, cb)) for _, cell, _ in _TERMINAL_SUMMARY]]
        cells.append(_status(row.worst, row.verdicts.replace(", ", "\n")))
        table.add_row(*cells)
    if not report.codebooks:
        table.add_row(Text("(no codebooks)"))
    return table


def _render_summary(console: Console, report: Report) -> None:
    """The summary table; where full names do not fit, codebooks are numbered with a legend."""
    table = _summary_table(report, short_names=False)
    if console.measure(table, options=console.options.update_width(100_000)).maximum <= console.width:
        console.print(table)
        return
    console.print(_summary_table(report, short_names=True))
    console.print(_facts_grid([(f"#{i}", cb.name) for i, cb in enumerate(report.codebooks, start=1)]))


def _mode_table(tc: TokensCollapse) -> Table:
    table = Table(title=Text(f"tokens collapse: {tc.modes} modes ({tc.mode_source})"), box=box.SIMPLE_HEAD)
    for i, h in enumerate(MODE_HEADERS):
        table.add_column(h, justify="left" if i in (0, 6) else "right", overflow="fold")
    for cells, starved in mode_rows(tc):
        out = [Text(s) for s in cells]
        if starved:
            out[-1] = _status("fail", cells[-1])
        table.add_row(*out)
    return table


def _levels_table(levels: list[CodebookReport]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for i, h in enumerate(("level", "codebook", "used", "perplexity", "rel. MSE", "EMA dead")):
        table.add_column(h, justify="left" if i == 1 else "right", overflow="fold")
    for cb in levels:
        u, e = cb.usage, cb.ema
        ema_dead = NONE if e is None or not e.is_count else fmt_num(e.dead_codes_relative)
        table.add_row(
            Text(str(cb.level)), Text(cb.name),
            Text(NONE if u is None else fmt_pct(u.utilization)),
            Text(NONE if u is None else fmt_num(u.perplexity)),
            Text(NONE if u is None else fmt_num(u.relative_mse)),
            Text(ema_dead),
        )  # fmt: skip
    return table


def _render_codebook(console: Console, cb: CodebookReport) -> None:
    console.print(Text(codebook_title(cb), style="bold"))
    console.print(_facts_grid(codebook_facts(cb)))
    if cb.tokens_collapse is not None:
        console.print(_mode_table(cb.tokens_collapse))
    console.print()


def _stacks(report: Report) -> list[tuple[str, list[CodebookReport]]]:
    order: dict[str, list[CodebookReport]] = {}
    for cb in report.codebooks:
        order.setdefault(cb.stack, []).append(cb)
    return [(name, sorted(cbs, key=lambda c: (c.level, c.head))) for name, cbs in order.items()]


def _render_verdicts(console: Console, report: Report) -> None:
    console.rule(Text("verdicts"))
    if not report.verdicts:
        console.print(Text("no checks applied"))
    for v in sorted_verdicts(report):
        line = Text()
        line.append(f"{v.status.upper():<4}", style=STATUS_STYLE[v.status])
        line.append(f" {v.check}")
        line.append(f" [{v.codebook}]" if v.codebook is not None else " [model]")
        line.append(f" {verdict_measure(v)}")
        console.print(line)
        console.print(Text(f"     {v.message}"))
        if v.remedy:
            _print_remedy(console, v.remedy, v.remedy_argv)


def _print_remedy(console: Console, text: str, argv: list[str] | None) -> None:
    """A command as lines that paste as one (`` \\`` continuations, never wrapped inside a
    word); a remedy in words wraps as text."""
    if argv is None:
        console.print(Text(f"     remedy: {text}", style="cyan"))
        return
    for line in shell_lines(argv, width=console.width, prefix="     remedy: "):
        console.print(Text(line, style="cyan"), no_wrap=True, crop=False, overflow="ignore")


def _render_diagnosis(console: Console, report: Report) -> None:
    if not report.diagnosis:
        return
    console.rule(Text("diagnosis"))
    shown: set[str] = set()
    for f in report.diagnosis:
        line = Text()
        line.append(f"{f.status.upper():<4}", style=STATUS_STYLE[f.status])
        line.append(f" {f.collapse}", style="bold")
        line.append(f": {f.summary}")
        console.print(line)
        if f.remedy and f.remedy in shown:
            console.print(Text("     remedy: the one above", style="cyan"))
        elif f.remedy:
            _print_remedy(console, f.remedy, f.remedy_argv)
            shown.add(f.remedy)


def _check_groups(report: Report) -> list[list[Verdict]]:
    """The non-ok verdicts, worst first, one group per (status, check): a check failing on eight
    levels of a stack is one line."""
    groups: dict[tuple[str, str], list[Verdict]] = {}
    for v in sorted_verdicts(report):
        if v.status != "ok":
            groups.setdefault((v.status, v.check), []).append(v)
    return list(groups.values())


def _check_line(group: list[Verdict]) -> Text:
    """'FAIL utilization [quantizer] value 21.1% (threshold 30.0%)'; for several codebooks
    'WARN relative_mse values 0.91-0.97 (threshold 0.9) [3: a, b, +1]'."""
    v = group[0]
    line = Text()
    line.append(f"{v.status.upper():<4}", style=STATUS_STYLE[v.status])
    line.append(f" {v.check}")
    if len(group) == 1:
        line.append(f" [{v.codebook}]" if v.codebook is not None else " [model]")
        line.append(f" {verdict_measure(v)}")
        return line
    values = [g.value for g in group if g.value is not None]
    if values:
        lo, hi = min(values), max(values)
        span = fmt_check_value(v, lo) if lo == hi else f"{fmt_check_value(v, lo)}-{fmt_check_value(v, hi)}"
        line.append(f" values {span}")
    bounds = {g.threshold for g in group}
    if len(bounds) == 1 and v.threshold is not None:
        line.append(f" (threshold {fmt_check_value(v, v.threshold)})")
    names = [g.codebook or "model" for g in group]
    line.append(f" [{len(names)}: " + ", ".join(names[:2]) + (f", +{len(names) - 2}" if len(names) > 2 else "") + "]")
    return line


def _render_checks(console: Console, report: Report) -> None:
    counts = {s: sum(1 for v in report.verdicts if v.status == s) for s in STATUS_ORDER}
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none applied"
    console.rule(Text(f"checks: {tally}"))
    for group in _check_groups(report):
        console.print(_check_line(group), no_wrap=True, overflow="ellipsis")


def _render_next(console: Console, report: Report) -> None:
    notes = len(all_notes(report))
    more = f", {notes} note{'s' if notes != 1 else ''}" if notes else ""
    console.print(Text(f"next: --verbose (every verdict, per-mode tables{more}); --html report.html "
                       "(pictures); --json - (every number); docs/verdicts.md (the checks)"))


def _render_compact(console: Console, report: Report) -> None:
    _render_summary(console, report)
    _render_diagnosis(console, report)
    _render_checks(console, report)
    _render_next(console, report)


def render_terminal(report: Report, console: Console, *, verbose: bool = False) -> None:
    """Print ``report`` to ``console``. Default: summary table, diagnosis (one remedy per finding),
    one line per failing check, notes, where to look next. ``verbose``: summary table, diagnosis,
    header, every codebook's details and collapse sections, every verdict, notes."""
    if not verbose:
        _render_compact(console, report)
        return
    _render_summary(console, report)
    _render_diagnosis(console, report)
    console.print()
    console.print(_facts_grid(header_lines(report)))
    console.print()
    for stack, cbs in _stacks(report):
        if len(cbs) > 1:
            console.rule(Text(f"stack {stack}: {len(cbs)} levels"))
            console.print(_levels_table(cbs))
        else:
            console.rule(Text(f"codebook {cbs[0].name}"))
        for cb in cbs:
            _render_codebook(console, cb)

    ec = report.embeddings_collapse
    if ec is not None:
        console.rule(Text("embeddings collapse"))
        console.print(_facts_grid(embeddings_facts(ec)))
        if ec.merged_pairs:
            table = Table(box=box.SIMPLE_HEAD)
            for i, h in enumerate(PAIR_HEADERS):
                table.add_column(h, justify="left" if i == 0 else "right", overflow="fold")
            for cells in pair_rows(ec):
                table.add_row(*[Text(s) for s in cells])
            console.print(table)
        console.print()

    _render_verdicts(console, report)

    notes = all_notes(report)
    if notes:
        console.print()
        console.rule(Text("notes"))
        for note in notes:
            console.print(Text(f"- {note}"))
