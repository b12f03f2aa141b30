"""The terminal report (rich): one summary table, then details, collapse sections, verdicts, notes.

Everything shown is read from the Report; this module only formats. The text helpers here
(``fmt_num``, ``fmt_pct``, ``summary_rows``, ``codebook_facts``, ...) are shared with the HTML
renderer so both show the same words and numbers. Works without colour (``NO_COLOR``: statuses
are words, not just colours) and on narrow terminals (cells wrap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vqdoctor.core.results import EmbeddingsCollapse, TokensCollapse
from vqdoctor.report.schema import CodebookReport, Report, Verdict

STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "insufficient": "cyan"}
STATUS_ORDER = {"fail": 0, "warn": 1, "insufficient": 2, "ok": 3}
NONE = "-"


# ---------------------------------------------------------------- number formatting (for people)


def fmt_num(x: float | int | None) -> str:
    """3 significant figures; integers and values >= 1000 with thousands separators; None -> '-'."""
    if x is None or isinstance(x, bool):
        return NONE if x is None else str(x)
    if isinstance(x, int):
        return f"{x:,}"
    x = float(x)
    if not math.isfinite(x):
        return NONE
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.3g}"


def fmt_pct(x: float | None) -> str:
    """A share in [0, 1] as a percentage: 0.75 -> '75.0%'; never rounds a share below 1 up to 100%."""
    if x is None or not math.isfinite(float(x)):
        return NONE
    v = float(x) * 100
    if v == 0:
        return "0%"
    if abs(v) < 1:
        return f"{v:.2g}%"
    s = f"{v:.1f}"
    if x < 1 and s == "100.0":
        s = "99.9"
    return s + "%"


@lru_cache(maxsize=1)
def _percent_checks() -> frozenset[str]:
    try:  # the checks' own formatting rule; the renderers still work without it
        from vqdoctor.verdicts import CODEBOOK_CHECKS
    except ImportError:  # pragma: no cover
        return frozenset()
    return frozenset(spec.check for spec in CODEBOOK_CHECKS if spec.percent)


def fmt_check_value(check: str, x: float | None) -> str:
    """A verdict's value or threshold, as a percentage where the check is a share."""
    return fmt_pct(x) if check in _percent_checks() else fmt_num(x)


# ---------------------------------------------------------------- text shared with the HTML report


@dataclass(frozen=True)
class SummaryRow:
    name: str
    level: str  # "" outside stacks of several levels
    size_dim: str  # "K x d"
    used: str  # utilization
    dead: str
    perplexity: str
    normalized_perplexity: str
    mse: str
    relative_mse: str
    ema_dead: str
    rank: str  # "numerical / effective"
    allocation_tv: str
    verdicts: str  # "1 fail, 2 warn" | "3 ok" | "-"
    worst: str | None  # worst status among this codebook's verdicts


SUMMARY_HEADERS = (
    "codebook", "K x d", "used", "dead", "perplexity", "(of K)", "quant. MSE", "(relative)",
    "EMA dead", "rank / effective", "allocation TV", "verdicts",
)  # fmt: skip


def levels_of(report: Report) -> dict[str, int]:
    """Stack name -> number of codebooks in it."""
    out: dict[str, int] = {}
    for cb in report.codebooks:
        out[cb.stack] = out.get(cb.stack, 0) + 1
    return out


def codebook_verdicts(report: Report, cb: CodebookReport) -> list[Verdict]:
    return [v for v in report.verdicts if v.codebook == cb.name]


def verdict_summary(verdicts: Sequence[Verdict]) -> tuple[str, str | None]:
    """('1 fail, 2 warn', 'fail') for a list of verdicts; ('-', None) for none."""
    if not verdicts:
        return NONE, None
    counts = {s: sum(1 for v in verdicts if v.status == s) for s in ("fail", "warn", "insufficient", "ok")}
    worst = min((v.status for v in verdicts), key=STATUS_ORDER.__getitem__)
    bad = [f"{counts[s]} {s}" for s in ("fail", "warn", "insufficient") if counts[s]]
    return (", ".join(bad) if bad else f"{counts['ok']} ok"), worst


def summary_rows(report: Report) -> list[SummaryRow]:
    stacks = levels_of(report)
    rows = []
    for cb in report.codebooks:
        u, e, g, tc = cb.usage, cb.ema, cb.geometry, cb.tokens_collapse
        text, worst = verdict_summary(codebook_verdicts(report, cb))
        if e is not None and e.is_count and e.dead_codes_relative is not None:
            ema_dead = f"{e.dead_codes_relative:,}/{cb.size:,}"
        else:
            ema_dead = NONE
        rows.append(
            SummaryRow(
                name=cb.name,
                level=f"level {cb.level}" if stacks[cb.stack] > 1 else "",
                size_dim=f"{cb.size:,} x {cb.dim:,}",
                used=NONE if u is None else fmt_pct(u.utilization),
                dead=NONE if u is None else fmt_num(u.dead_codes),
                perplexity=NONE if u is None else fmt_num(u.perplexity),
                normalized_perplexity=NONE if u is None else fmt_pct(u.normalized_perplexity),
                mse=NONE if u is None else fmt_num(u.quantization_mse),
                relative_mse=NONE if u is None else fmt_num(u.relative_mse),
                ema_dead=ema_dead,
                rank=NONE if g is None else f"{g.numerical_rank:,} / {fmt_num(g.effective_rank)}",
                allocation_tv=NONE if tc is None else fmt_num(tc.allocation_tv),
                verdicts=text,
                worst=worst,
            )
        )
    return rows


def summary_cells(row: SummaryRow) -> list[str]:
    """The row's cells in SUMMARY_HEADERS order."""
    name = f"{row.name} ({row.level})" if row.level else row.name
    return [
        name, row.size_dim, row.used, row.dead, row.perplexity, row.normalized_perplexity,
        row.mse, row.relative_mse, row.ema_dead, row.rank, row.allocation_tv, row.verdicts,
    ]  # fmt: skip


def codebook_title(cb: CodebookReport) -> str:
    level = f", level {cb.level}" if cb.level else ""
    head = f", head {cb.head}" if cb.head else ""
    return f"{cb.name}: {cb.kind}, {cb.metric}, K={cb.size:,}, d={cb.dim:,}{level}{head}"


def codebook_facts(cb: CodebookReport) -> list[tuple[str, str]]:
    """(section, one line of facts) for the sections that apply to ``cb``."""
    out = [("layout", f"{cb.layout} (stack {cb.stack})")]
    if cb.metric_evidence:
        source = "" if cb.metric_source == "detected" else f"{cb.metric_source}: "
        out.append(("metric", f"{cb.metric} ({source}{cb.metric_evidence})"))
    if cb.keys:
        out.append(("keys", ", ".join(f"{role}: {key}" for role, key in cb.keys.items())))
    u = cb.usage
    if u is not None:
        mse = NONE if u.quantization_mse is None else fmt_num(u.quantization_mse)
        if u.relative_mse is not None:
            mse += f" (relative {fmt_num(u.relative_mse)})"
        out.append(
            (
                "usage",
                f"{u.vectors:,} vectors; used {u.used_codes:,} of {cb.size:,} ({fmt_pct(u.utilization)}); "
                f"dead {u.dead_codes:,} (count < {u.min_count:,}); perplexity {fmt_num(u.perplexity)} "
                f"({fmt_pct(u.normalized_perplexity)} of K); entropy {fmt_num(u.entropy_bits)} bits; "
                f"quant. MSE {mse}; top-1 code {fmt_pct(u.top1_mass)}, top 10% of codes "
                f"{fmt_pct(u.top10pct_mass)} of vectors; space: {u.space}",
            )
        )
    e = cb.ema
    if e is not None:
        if e.is_count:
            text = (
                f"from {e.source}: dead {fmt_num(e.dead_codes_relative)} (< 0.1 x uniform share), "
                f"{fmt_num(e.dead_codes_absolute)} (< {fmt_num(e.absolute_threshold)}); perplexity "
                f"{fmt_num(e.perplexity)} ({fmt_pct(e.normalized_perplexity)} of K); total {fmt_num(e.total)}"
            )
        else:
            text = f"from {e.source}: not a usage count"
        if e.initted is not None:
            text += f"; initialised: {'yes' if e.initted else 'no'}"
        if e.note:
            text += f"; {e.note}"
        out.append(("EMA", text))
    g = cb.geometry
    if g is not None:
        text = (
            f"numerical rank {g.numerical_rank:,}, effective rank {fmt_num(g.effective_rank)}; "
            f"duplicated codes {g.redundant_codes:,}"
            + (f" of {g.duplicate_sample:,} examined" if g.duplicate_sample < cb.size else "")
            + f" ({g.near_duplicate_pairs:,} near-duplicate pairs within {fmt_num(g.duplicate_tolerance)} "
            f"x median NN distance {fmt_num(g.median_nn_distance)})"
        )
        if g.codes_outside_support is not None:
            text += f"; codes outside the latents' support {g.codes_outside_support:,} (radius {fmt_num(g.support_radius)})"
        out.append(("geometry", text))
    w = cb.w
    if w is not None:
        out.append(
            (
                "W",
                f"{w.source} {w.shape[0]} x {w.shape[1]}: rank {w.rank:,}, effective rank "
                f"{fmt_num(w.effective_rank)}, Frobenius norm {fmt_num(w.frobenius_norm)}",
            )
        )
    tc = cb.tokens_collapse
    if tc is not None:
        out.append(
            (
                "tokens collapse",
                f"{tc.modes} modes ({tc.mode_source}); allocation TV {fmt_num(tc.allocation_tv)}; "
                f"starved modes: {starved_labels(tc) or 'none'}",
            )
        )
    if cb.note:
        out.append(("note", cb.note))
    return out


def starved_labels(tc: TokensCollapse) -> str:
    return ", ".join(m.label for m in tc.per_mode if m.mode in tc.starved_modes)


MODE_HEADERS = ("mode", "data share", "code share", "ratio", "codes", "vectors", "")


def mode_rows(tc: TokensCollapse) -> list[tuple[list[str], bool]]:
    """(cells in MODE_HEADERS order, starved) per mode."""
    out = []
    for m in tc.per_mode:
        starved = m.mode in tc.starved_modes
        cells = [
            f"{m.mode}: {m.label}", fmt_pct(m.data_share), fmt_pct(m.code_share), fmt_num(m.ratio),
            fmt_num(m.codes), fmt_num(m.vectors), "STARVED" if starved else "",
        ]  # fmt: skip
        out.append((cells, starved))
    return out


def embeddings_facts(ec: EmbeddingsCollapse) -> list[tuple[str, str]]:
    return [
        ("modes", f"{len(ec.labels)} data modes ({ec.mode_source}); subsample of {ec.subsample:,} points"),
        ("modes found", f"inputs {fmt_num(ec.input_modes)} -> latents {fmt_num(ec.embedding_modes)}"),
        ("k-NN purity", f"inputs {fmt_pct(ec.input_knn_purity)} -> latents {fmt_pct(ec.latent_knn_purity)}"),
        ("merged pairs", f"{len(ec.merged_pairs)}" if ec.merged_pairs else "none"),
    ]


PAIR_HEADERS = ("merged pair", "input overlap", "latent overlap")


def pair_rows(ec: EmbeddingsCollapse) -> list[list[str]]:
    return [
        [f"{p.label_a} + {p.label_b} ({p.a}, {p.b})", fmt_pct(p.input_overlap), fmt_pct(p.latent_overlap)]
        for p in ec.merged_pairs
    ]


def sorted_verdicts(report: Report) -> list[Verdict]:
    """Worst first; the Report's order within a status."""
    return sorted(report.verdicts, key=lambda v: STATUS_ORDER[v.status])


def verdict_measure(v: Verdict) -> str:
    """'value 37.5% (threshold 30.0%)'."""
    text = f"value {fmt_check_value(v.check, v.value)}"
    if v.threshold is not None:
        text += f" (threshold {fmt_check_value(v.check, v.threshold)})"
    return text


def header_lines(report: Report) -> list[tuple[str, str]]:
    c, d = report.checkpoint, report.data
    nesting = f", nesting {c.nesting}" if c.nesting else ""
    data = d.source
    if d.vectors is not None:
        data += f"; {d.vectors:,} vectors"
        if d.dim is not None:
            data += f" of dim {d.dim:,}"
    if d.mode_source:
        data += f"; modes from {d.mode_source}"
    return [
        ("checkpoint", f"{c.path} ({c.format}{nesting})"),
        ("data", data),
        ("report", f"{report.schema}, vqdoctor {report.vqdoctor_version or '?'}"),
    ]


def all_notes(report: Report) -> list[str]:
    notes = list(report.notes)
    for q in report.codebook_free:
        desc = ", ".join(f"{k}={v}" for k, v in q.items())
        notes.append(f"codebook-free quantizer ({desc}): no codebook to measure")
    if report.projection is not None:
        p = report.projection
        notes.append(f"2-D picture: {p.method} of {len(p.latents):,} points in {fmt_num(p.seconds)} s")
    return notes


# ---------------------------------------------------------------- rich rendering


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


# Terminal summary columns: (header, cell, minimum width); two facts per cell keep it narrow.
_TERMINAL_SUMMARY = (
    ("K x d", lambda r: r.size_dim, 5),
    ("used\n(dead)", lambda r: f"{r.used}\n{r.dead} dead" if r.dead != NONE else r.used, 8),
    ("perpl.\n(of K)", lambda r: f"{r.perplexity}\n{r.normalized_perplexity}" if r.perplexity != NONE else NONE, 6),
    ("MSE\n(rel.)", lambda r: f"{r.mse}\n({r.relative_mse})" if r.mse != NONE else NONE, 8),
    ("EMA\ndead", lambda r: r.ema_dead, 4),
    ("rank\n/eff.", lambda r: r.rank.replace(" / ", "/"), 4),
    ("alloc.\nTV", lambda r: r.allocation_tv, 5),
)


def _summary_table(report: Report, *, short_names: bool) -> Table:
    c = report.checkpoint
    table = Table(
        title=Text(f"vqdoctor: {c.path}"),
        caption=Text(f"data: {report.data.source}"),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    table.add_column("#" if short_names else "codebook", overflow="fold")
    for header, _, width in _TERMINAL_SUMMARY:
        table.add_column(header, justify="right", min_width=width, overflow="fold")
    table.add_column("verdicts", overflow="fold", min_width=6)
    for i, row in enumerate(summary_rows(report), start=1):
        name = f"#{i}" if short_names else row.name
        if row.level:
            name += f"\n{row.level}"
        cells = [Text(name), *[Text(cell(row)) for _, cell, _ in _TERMINAL_SUMMARY]]
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
            console.print(Text(f"     remedy: {v.remedy}", style="cyan"))


def _render_diagnosis(console: Console, report: Report) -> None:
    if not report.diagnosis:
        return
    console.rule(Text("diagnosis"))
    for f in report.diagnosis:
        line = Text()
        line.append(f"{f.status.upper():<4}", style=STATUS_STYLE[f.status])
        line.append(f" {f.collapse}", style="bold")
        line.append(f": {f.summary}")
        console.print(line)
        if f.remedy:
            console.print(Text(f"     remedy: {f.remedy}", style="cyan"))
    console.print()


def render_terminal(report: Report, console: Console) -> None:
    """Print ``report`` to ``console``: summary table, diagnosis, details, collapse sections,
    verdicts, notes."""
    _render_summary(console, report)
    _render_diagnosis(console, report)
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
