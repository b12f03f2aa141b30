"""Renderers of a :class:`~vqdoctor.report.trend_result.Trend`: terminal table (rich), JSON, CSV, a plot
(matplotlib, metric vs step, one line per codebook). They compute nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from vqdoctor.report.json_out import atomic_write_bytes
from vqdoctor.report.trend_result import Trend, TrendRow

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import Console


# (row attribute, column header, format)
COLUMNS = (
    ("utilization", "util.", "{:.1%}"),
    ("perplexity", "perplexity", "{:.1f}"),
    ("dead_codes", "dead", "{:d}"),
    ("ema_dead_codes", "EMA dead", "{:d}"),
    ("ema_perplexity", "EMA ppl", "{:.1f}"),
    ("effective_rank", "eff. rank", "{:.1f}"),
    ("w_rank", "W rank", "{:d}"),
    ("w_effective_rank", "W eff. rank", "{:.1f}"),
    ("allocation_tv", "alloc. TV", "{:.3f}"),
)
PLOTTED = (
    ("utilization", "utilization"),
    ("perplexity", "perplexity"),
    ("ema_perplexity", "EMA perplexity"),
    ("dead_codes", "dead codes"),
    ("w_effective_rank", "W effective rank"),
    ("effective_rank", "codebook effective rank"),
    ("allocation_tv", "allocation TV"),
)


def render_trend(t: Trend, console: Console) -> None:
    from rich.table import Table

    shown = [c for c in COLUMNS if any(getattr(r, c[0]) is not None for r in t.rows)]
    table = Table(title=f"vqdoctor trend: {len(t.checkpoints)} checkpoints", title_justify="left")
    table.add_column("step", justify="right")
    table.add_column("codebook")
    for _, header, _ in shown:
        table.add_column(header, justify="right")
    for r in t.rows:
        cells = [f"{r.step:,}", r.codebook]
        for attr, _, fmt in shown:
            v = getattr(r, attr)
            cells.append("-" if v is None else fmt.format(v))
        table.add_row(*cells)
    console.print(table)
    console.print(f"Data: {t.data}")
    for note in t.notes:
        console.print(f"Note: {note}")
    if not t.verdicts:
        console.print("[green]Trend: no metric fell (or rose) past its bound over the run.[/]")
    for v in t.verdicts:
        colour = "red" if v.status == "fail" else "yellow"
        console.print(f"[{colour}]{v.status.upper()}[/] {v.codebook}: {v.message}")


def trend_json(t: Trend) -> str:
    return json.dumps(t.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def plot_trend(t: Trend) -> Figure:
    """One panel per metric that applies, metric vs step, one line per codebook."""
    from matplotlib.figure import Figure

    panels = [(attr, title) for attr, title in PLOTTED if any(getattr(r, attr) is not None for r in t.rows)]
    cols = 2 if len(panels) > 1 else 1
    rows = max(1, -(-len(panels) // cols))
    fig = Figure(figsize=(5.2 * cols, 3.2 * rows), layout="constrained")
    steps = [p.step for p in t.checkpoints]
    log_x = min(steps) > 0 and max(steps) / min(steps) >= 100
    for i, (attr, title) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for name in t.codebooks:
            series = t.series(name, attr)
            if series:
                ax.plot([s for s, _ in series], [v for _, v in series], marker="o", label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        if log_x:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        if i == 0 and len(t.codebooks) <= 12:
            ax.legend(fontsize="small")
    return fig


def save_trend_plot(t: Trend, path: str | Path, *, dpi: int = 110) -> Path:
    """The trend picture at ``path`` (.png, .svg or .pdf by its suffix), ``dpi`` for PNG pixels."""
    import io

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    buf = io.BytesIO()
    plot_trend(t).savefig(buf, format=fmt, dpi=int(dpi))
    atomic_write_bytes(path, buf.getvalue())
    return path


CSV_FIELDS = tuple(TrendRow.__dataclass_fields__)


def to_csv(t: Trend) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in t.rows:
        writer.writerow(["" if getattr(r, f) is None else getattr(r, f) for f in CSV_FIELDS])
    return buf.getvalue()
