"""The words and numbers a person reads, as plain text: shared by the terminal report
(``report/terminal.py``) and the HTML report (``report/html.py``) so both say the same thing.

Everything here is read from the Report (``report/schema.py``) and nothing above it: how a
verdict's value reads comes with the verdict (``Verdict.unit``).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from vqdoctor.core.results import EmbeddingsCollapse, TokensCollapse
from vqdoctor.report.schema import CodebookReport, Report, Verdict

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


def fmt_value(x: float | None, percent: bool, *, digits: int = 4) -> str:
    """A checked value as the check messages and tables write it: a share with one decimal
    (``75.0%``), else ``digits`` significant figures; None -> '-'."""
    if x is None:
        return NONE
    return f"{x:.1%}" if percent else f"{x:.{digits}g}"


def fmt_check_value(v: Verdict, x: float | None) -> str:
    """A verdict's value or threshold as its unit reads: a percentage for a share, a whole number
    for a count."""
    if v.unit == "share":
        return fmt_pct(x)
    if v.unit == "count" and x is not None and math.isfinite(x) and float(x).is_integer():
        return fmt_num(int(x))
    return fmt_num(x)


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
    text = f"value {fmt_check_value(v, v.value)}"
    if v.threshold is not None:
        text += f" (threshold {fmt_check_value(v, v.threshold)})"
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


def shell_lines(argv: Sequence[str], *, width: int, prefix: str, indent: str = "       ") -> list[str]:
    """``argv`` shell-quoted and wrapped to ``width`` with `` \\`` continuations, so the lines
    pasted into a shell run as one command; the first line starts with ``prefix``, the others with
    ``indent``. A word longer than a line stays whole."""
    lines, line = [], prefix
    for word in (shlex.quote(a) for a in argv):
        start = line in (prefix, indent)
        if not start and len(line) + 1 + len(word) + 2 > width:
            lines.append(line + " \\")
            line = indent
            start = True
        line += word if start else " " + word
    lines.append(line)
    return lines
