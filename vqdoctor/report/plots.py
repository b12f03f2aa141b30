"""Pictures of a Report (matplotlib). Each function takes ``ax=None`` and returns the Figure.

Figures are built with ``matplotlib.figure.Figure`` (the object API), not ``pyplot``: no global
figure registry, no GUI backend, nothing to close; PNGs are drawn by Agg. In a notebook the
returned Figure displays itself. matplotlib is imported inside the functions, so importing
``vqdoctor.report`` stays light.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vqdoctor.errors import UsageError
from vqdoctor.report.schema import CodebookReport, Report

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MODE_COLORS = "tab10"
DPI = 110


def _figure(ax: Axes | None, size: tuple[float, float] = (6.4, 4.0)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _need(value: Any, what: str, cb: CodebookReport) -> None:
    if value is None:
        raise UsageError(
            f"codebook '{cb.name}' has no {what} to plot",
            hint="this picture needs data (latents or inputs); see `vqdoctor inspect --help`",
        )


def plot_rank_frequency(cb: CodebookReport, ax: Axes | None = None) -> Figure:
    """Usage counts sorted descending against rank (log count axis); uniform usage as a line."""
    _need(cb.counts, "per-code usage counts", cb)
    fig, ax = _figure(ax)
    counts = sorted(cb.counts or [], reverse=True)
    used = [c for c in counts if c > 0]
    total = sum(counts)
    ranks = range(1, len(used) + 1)
    if used:
        ax.step(ranks, used, where="mid", color="tab:blue", label=f"used codes ({len(used):,})")
    if total:
        ax.axhline(total / max(1, len(counts)), color="gray", linestyle="--", label="uniform usage (N/K)")
    dead = len(counts) - len(used)
    if dead:
        ax.axvspan(len(used) + 0.5, len(counts) + 0.5, color="tab:red", alpha=0.12, label=f"unused codes ({dead:,})")
    ax.set_yscale("log")
    ax.set_xlim(0.5, len(counts) + 0.5)
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("vectors assigned (log)")
    ax.set_title(f"{cb.name}: rank-frequency", fontsize="medium")
    ax.legend(fontsize="small")
    return fig


def plot_lorenz(cb: CodebookReport, ax: Axes | None = None) -> Figure:
    """Cumulative share of vectors against cumulative share of codes (least used first)."""
    _need(cb.counts, "per-code usage counts", cb)
    fig, ax = _figure(ax, (4.8, 4.4))
    counts = sorted(cb.counts or [])
    k, total = len(counts), sum(counts)
    xs, ys, run = [0.0], [0.0], 0
    for i, c in enumerate(counts, start=1):
        run += c
        xs.append(i / k)
        ys.append(run / total if total else 0.0)
    # Gini = 1 - 2 * area under the Lorenz curve (trapezoids): a picture label, not a metric.
    area = sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(k))
    gini = 1 - 2 * area
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", label="uniform usage")
    ax.plot(xs, ys, color="tab:blue", label=f"codes (Gini {gini:.2f})")
    ax.fill_between(xs, ys, xs, color="tab:blue", alpha=0.1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("share of codes (least used first)")
    ax.set_ylabel("share of vectors")
    ax.set_title(f"{cb.name}: cumulative usage", fontsize="medium")
    ax.legend(fontsize="small", loc="upper left")
    return fig


def stack_levels(report: Report, stack: str) -> list[CodebookReport]:
    return sorted((cb for cb in report.codebooks if cb.stack == stack), key=lambda c: (c.level, c.head))


def plot_levels(report: Report, stack: str, ax: Axes | None = None) -> Figure:
    """Per-level bars of utilization and normalised perplexity for a residual stack (from the
    EMA buffers where a level has no data)."""
    levels = stack_levels(report, stack)
    if not levels:
        raise UsageError(f"no codebook belongs to stack '{stack}'", hint="pick a stack from the report")
    fig, ax = _figure(ax, (max(4.0, 1.0 + 0.9 * len(levels)), 3.8))
    util, ppl, labels = [], [], []
    for cb in levels:
        if cb.usage is not None:
            util.append(cb.usage.utilization)
            ppl.append(cb.usage.normalized_perplexity)
            labels.append(f"L{cb.level}")
        elif cb.ema is not None and cb.ema.is_count and cb.ema.normalized_perplexity is not None:
            dead = cb.ema.dead_codes_relative
            util.append(float("nan") if dead is None else 1 - dead / cb.size)
            ppl.append(cb.ema.normalized_perplexity)
            labels.append(f"L{cb.level}\n(EMA)")
        else:
            util.append(float("nan"))
            ppl.append(float("nan"))
            labels.append(f"L{cb.level}\n(n/a)")
    x = list(range(len(levels)))
    w = 0.38
    ax.bar([i - w / 2 for i in x], [100 * v for v in util], w, label="utilization", color="tab:blue")
    ax.bar([i + w / 2 for i in x], [100 * v for v in ppl], w, label="perplexity / K", color="tab:orange")
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of codes")
    ax.set_title(f"{stack}: per level", fontsize="medium")
    ax.legend(fontsize="small", loc="best")
    return fig


def plot_spectrum(cb: CodebookReport, ax: Axes | None = None) -> Figure:
    """Singular values of the (centred, effective) codebook, and of W when there is one."""
    if cb.geometry is None and cb.w is None:
        _need(None, "singular spectrum", cb)
    fig, ax = _figure(ax)
    floor = None
    for values, label, color in (
        (cb.geometry.singular_values if cb.geometry else None, "codebook", "tab:blue"),
        (cb.w.singular_values if cb.w else None, "W", "tab:orange"),
    ):
        if not values:
            continue
        top = max(values) or 1.0
        rel = [v / top for v in values]
        positive = [v for v in rel if v > 0]
        floor = min([floor or 1.0, *positive])
        if label == "codebook" and cb.geometry is not None:
            g = cb.geometry
            label += f" (rank {g.numerical_rank}, eff. {g.effective_rank:.3g})"
        elif cb.w is not None:
            label += f" (rank {cb.w.rank}, eff. {cb.w.effective_rank:.3g})"
        ax.plot(range(1, len(rel) + 1), [v if v > 0 else float("nan") for v in rel], marker="o",
                markersize=3, color=color, label=label)  # fmt: skip
    ax.set_yscale("log")
    if floor is not None:
        ax.set_ylim(bottom=min(floor, 1e-3) / 2, top=2)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("index")
    ax.set_ylabel("singular value / largest (log)")
    ax.set_title(f"{cb.name}: singular spectrum", fontsize="medium")
    ax.legend(fontsize="small")
    return fig


def plot_allocation(cb: CodebookReport, ax: Axes | None = None) -> Figure:
    """Per data mode: share of the data against share of the codes; starved modes marked."""
    tc = cb.tokens_collapse
    if tc is None:
        _need(None, "tokens-collapse section", cb)
        raise AssertionError  # unreachable: _need raised
    fig, ax = _figure(ax, (max(4.5, 1.2 + 0.7 * len(tc.per_mode)), 3.8))
    x = list(range(len(tc.per_mode)))
    w = 0.38
    ax.bar([i - w / 2 for i in x], [100 * m.data_share for m in tc.per_mode], w, label="data share", color="tab:gray")
    bars = ax.bar([i + w / 2 for i in x], [100 * m.code_share for m in tc.per_mode], w, label="code share",
                  color="tab:blue")  # fmt: skip
    labels = []
    for bar, m in zip(bars, tc.per_mode):
        starved = m.mode in tc.starved_modes
        if starved:
            bar.set_facecolor("tab:red")
            bar.set_edgecolor("black")
            bar.set_hatch("//")
        labels.append(f"{m.label}\n(starved)" if starved else m.label)
    ax.set_xticks(x, labels, fontsize="small")
    from matplotlib.patches import Patch

    # proxies: the first code bar may itself be restyled as starved
    handles = [Patch(facecolor="tab:gray", label="data share"), Patch(facecolor="tab:blue", label="code share")]
    if tc.starved_modes:
        handles.append(Patch(facecolor="tab:red", edgecolor="black", hatch="//", label="starved code share"))
    ax.legend(handles=handles, fontsize="small")
    ax.set_ylabel("%")
    ax.set_title(f"{cb.name}: codes per mode (TV {tc.allocation_tv:.2f})", fontsize="medium")
    return fig


def _scatter(ax: Axes, points: Sequence[Sequence[float]], modes: Sequence[int], title: str, labels: Sequence[str]) -> None:
    import matplotlib

    cmap = matplotlib.colormaps[MODE_COLORS]
    for mode in sorted(set(modes)):
        pts = [p for p, m in zip(points, modes) if m == mode]
        name = labels[mode] if 0 <= mode < len(labels) else f"mode {mode}"
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=6, alpha=0.6, color=cmap(mode % cmap.N), label=name)
    ax.set_title(title, fontsize="medium")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_projection(report: Report, ax: Axes | Sequence[Axes] | None = None) -> Figure:
    """2-D picture of the latents coloured by mode, codes overlaid as black x. With the inputs'
    picture in the Report, the inputs are drawn beside it (two axes; pass two axes or None)."""
    p = report.projection
    if p is None:
        raise UsageError("the report has no 2-D projection", hint="run `vqdoctor inspect` with --projection tsne|umap|pca")
    labels = report.embeddings_collapse.labels if report.embeddings_collapse is not None else []
    method = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}.get(p.method, p.method)
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10.5 if p.inputs is not None else 5.6, 4.8), layout="constrained")
        axes = list(fig.subplots(1, 2)) if p.inputs is not None else [fig.add_subplot()]
    else:
        axes = list(ax) if isinstance(ax, Sequence) else [ax]
        fig = axes[0].figure
    if p.inputs is not None and len(axes) >= 2:
        _scatter(axes[0], p.inputs, p.latent_modes, f"inputs ({method})", labels)
        target = axes[1]
    else:
        target = axes[0]
    _scatter(target, p.latents, p.latent_modes, f"latents ({method}), codes as x", labels)
    if p.codes:
        target.scatter([c[0] for c in p.codes], [c[1] for c in p.codes], marker="x", s=22, linewidths=1.0,
                       color="black", label="codes")  # fmt: skip
    target.legend(fontsize="x-small", markerscale=2, loc="best")
    return fig


# ---------------------------------------------------------------- every applicable picture


def slug(name: str) -> str:
    """A file-name-safe form of a codebook or stack name."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s[:60].strip("-") or "codebook"


def iter_plots(report: Report) -> Iterator[tuple[str, str, Callable[[], Figure]]]:
    """(file stem, caption, draw) for every picture that applies to ``report``, in a stable order."""
    width = max(2, len(str(len(report.codebooks))))
    for i, cb in enumerate(report.codebooks, start=1):
        stem = f"{i:0{width}d}-{slug(cb.name)}"
        if cb.counts is not None:
            yield f"{stem}-rank-frequency", f"{cb.name}: rank-frequency of code usage", lambda cb=cb: plot_rank_frequency(cb)
            yield f"{stem}-lorenz", f"{cb.name}: cumulative usage (Lorenz curve)", lambda cb=cb: plot_lorenz(cb)
        if cb.geometry is not None or cb.w is not None:
            yield f"{stem}-spectrum", f"{cb.name}: singular spectrum", lambda cb=cb: plot_spectrum(cb)
        if cb.tokens_collapse is not None:
            yield f"{stem}-allocation", f"{cb.name}: codes per data mode", lambda cb=cb: plot_allocation(cb)
    seen: dict[str, int] = {}
    stacks = dict.fromkeys(cb.stack for cb in report.codebooks)
    for stack in stacks:
        if len(stack_levels(report, stack)) > 1:
            s = slug(stack)
            seen[s] = seen.get(s, 0) + 1
            s = s if seen[s] == 1 else f"{s}-{seen[s]}"
            yield f"stack-{s}-levels", f"stack {stack}: per level", lambda stack=stack: plot_levels(report, stack)
    if report.projection is not None:
        yield "projection", f"2-D picture ({report.projection.method})", lambda: plot_projection(report)


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save_plots(report: Report, out_dir: Path) -> list[Path]:
    """Write every applicable picture as ``out_dir/NAME.png`` (folder created); return the paths.

    Names are stable: ``NN-<codebook>-rank-frequency``, ``-lorenz``, ``-spectrum``, ``-allocation``
    (NN = the codebook's position in the report), ``stack-<stack>-levels``, ``projection``."""
    from vqdoctor.report.json_out import atomic_write_bytes

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the plots folder {out_dir}: {e.strerror or e}", hint="pick a writable --plots DIR") from e
    paths = []
    for stem, _, draw in iter_plots(report):
        fig = draw()
        path = out_dir / f"{stem}.png"
        atomic_write_bytes(path, figure_png(fig))
        fig.clear()
        paths.append(path)
    return paths
