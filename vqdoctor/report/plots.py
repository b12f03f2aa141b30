"""Pictures of a Report (matplotlib). Each function takes ``ax=None`` and returns the Figure.

Figures are built with ``matplotlib.figure.Figure`` (the object API), not ``pyplot``: no global
figure registry, no GUI backend, nothing to close; PNGs are drawn by Agg. In a notebook the
returned Figure displays itself. matplotlib is imported inside the functions, so importing
``vqdoctor.report`` stays light.
"""

from __future__ import annotations

import functools
import io
import numbers
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from vqdoctor.errors import UsageError
from vqdoctor.report.schema import CodebookReport, Report

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 110  # default resolution of every PNG (``--dpi``)
DPI_RANGE = (50, 600)  # what --dpi accepts
DENSITY_POINTS = 20_000  # above this many points a picture draws a density, not a scatter
LEGEND_MODES = 20  # above this many modes a colour bar replaces the per-mode legend
HEATMAP_COLUMNS = 800  # the allocation heatmap averages neighbouring codes above this many live codes
DUPLICATE_TOLERANCE = 1e-3  # codes closer than this share of the picture's span are "at one point"


@functools.lru_cache(maxsize=8)
def _palette(n: int) -> tuple[tuple[float, float, float], ...]:
    import matplotlib
    import numpy as np

    def rgb(c: Sequence[float]) -> tuple[float, float, float]:
        return (float(c[0]), float(c[1]), float(c[2]))

    base = [rgb(matplotlib.colormaps["tab10"](i)) for i in range(10)]
    base += [rgb(matplotlib.colormaps["tab20"](2 * i + 1)) for i in range(10)]  # tab10's light partners
    if n <= len(base):
        return tuple(base[:n])
    # glasbey-like: from an HSV grid (no greys, no near-black or near-white), keep adding the
    # candidate farthest (CIELAB distance) from every colour chosen so far
    from matplotlib.colors import hsv_to_rgb

    hues = max(72, -(-2 * n // 9))
    grid = np.array([(h / hues, s, v) for h in range(hues) for s in (0.45, 0.7, 1.0) for v in (0.5, 0.72, 0.95)])
    cand = hsv_to_rgb(grid)
    chosen = np.array(base)
    lab_c, lab_s = _lab(cand), _lab(chosen)
    near = np.min(((lab_c[:, None, :] - lab_s[None, :, :]) ** 2).sum(-1), axis=1)
    out = list(base)
    while len(out) < n:
        j = int(np.argmax(near))
        out.append(rgb(cand[j]))
        near = np.minimum(near, ((lab_c - lab_c[j]) ** 2).sum(-1))
        near[j] = -1.0  # never twice
    return tuple(out)


def _lab(rgb: Any) -> Any:
    """sRGB in [0, 1] (n, 3) -> CIELAB (D65), for colour distances."""
    import numpy as np

    c = np.asarray(rgb, dtype=np.float64)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def mode_colors(n: int) -> list[tuple[float, float, float]]:
    """``n`` distinct RGB colours for data modes 0..n-1: tab10 first (the usual matplotlib
    colours), then their light tab20 partners, then a glasbey-like sequence (each colour the one
    farthest in CIELAB from all before it), so no two modes share a colour however many there are."""
    if n < 0:
        raise ValueError(f"mode_colors: n must be >= 0, got {n}")
    return list(_palette(n))


def check_dpi(dpi: int) -> int:
    """``dpi`` when it is a whole number in :data:`DPI_RANGE`, else a :class:`UsageError`."""
    lo, hi = DPI_RANGE
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Integral) or not lo <= dpi <= hi:
        raise UsageError(f"--dpi {dpi!r} is out of range: it must be a whole number between {lo} and {hi}.",
                         f"Pass --dpi with a value in that range (default {DPI}; 200-300 for print).")
    return dpi


def _figure(ax: Axes | None, size: tuple[float, float] = (6.4, 4.0)) -> tuple[Figure, Axes]:
    if ax is not None:
        return cast("Figure", ax.figure), ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    fig._vqdoctor_made = True  # type: ignore[attr-defined]  # ours: legends may go outside the axes
    return fig, fig.add_subplot()


def _outside_legend(fig: Figure, ax: Axes, where: str = "right", **kw: Any) -> None:
    """A legend beside the axes (never over the data): outside the axes in a figure this module
    made (constrained layout makes room), else beside the caller's axes (anchored outside them)."""

    handles, labels = kw.pop("handles", None), None
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    kw.setdefault("fontsize", "small")
    if getattr(fig, "_vqdoctor_made", False):
        loc = {"right": "outside right upper", "top": "outside upper center", "bottom": "outside lower center"}[where]
        if where != "right":
            kw.setdefault("ncols", min(len(handles), 4))
        kw["loc"] = loc
        fig.legend(handles, labels or [h.get_label() for h in handles], **kw)
    else:
        anchor = {"right": ((1.02, 1.0), "upper left"), "top": ((0.5, 1.02), "lower center"),
                  "bottom": ((0.5, -0.12), "upper center")}[where]  # fmt: skip
        kw.update(loc=anchor[1], bbox_to_anchor=anchor[0], borderaxespad=0.0)
        ax.legend(handles, labels or [h.get_label() for h in handles], **kw)


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
    ax.legend(fontsize="small", loc="upper right")  # the curve falls from the upper left
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
    fig, ax = _figure(ax, (max(5.5, 1.5 + 0.9 * len(levels)), 3.0))
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
    _outside_legend(fig, ax, "bottom")  # the bars reach 100%: a legend inside would cover them
    return fig


def plot_levels_rank_frequency(report: Report, stack: str, ax: Axes | None = None) -> Figure:
    """Every level of a residual stack in one picture: each level's code usage sorted descending,
    as a multiple of uniform usage (N/K) against the share of codes (so levels of different K and
    N compare); a level whose curve drops to the bottom early has dead codes."""
    import numpy as np

    levels = [cb for cb in stack_levels(report, stack) if cb.counts]
    if not levels:
        raise UsageError(f"no level of stack '{stack}' has per-code usage counts",
                         hint="this picture needs data (latents or inputs); see `vqdoctor inspect --help`")  # fmt: skip
    import matplotlib

    fig, ax = _figure(ax, (max(5.5, 1.5 + 0.9 * len(levels)), 3.0))
    cmap = matplotlib.colormaps["viridis"]
    floor = None
    for j, cb in enumerate(levels):
        counts = np.sort(np.asarray(cb.counts, dtype=np.float64))[::-1]
        total = counts.sum()
        if total <= 0:
            continue
        rel = counts / (total / len(counts))
        positive = rel[rel > 0]
        floor = positive.min() if floor is None else min(floor, positive.min())
        x = (np.arange(len(counts)) + 0.5) / len(counts)
        dead = int((counts == 0).sum())
        label = f"L{cb.level}" + (f" ({dead:,} dead)" if dead else "")
        ax.step(x, np.where(rel > 0, rel, np.nan), where="mid", color=cmap(j / max(1, len(levels) - 1) * 0.85),
                label=label)  # fmt: skip
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=0.8, label="uniform")
    ax.set_yscale("log")
    if floor is not None:
        ax.set_ylim(bottom=floor / 1.5)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of codes (most used first)")
    ax.set_ylabel("usage / uniform (log)")
    ax.set_title(f"{stack}: rank-frequency per level", fontsize="medium")
    _outside_legend(fig, ax, "right")
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
    m_modes = len(tc.per_mode)
    many = m_modes > 12
    fig, ax = _figure(ax, (min(14.0, max(4.5, 1.2 + (0.32 if many else 0.55) * m_modes)), 4.2 if many else 3.8))
    x = list(range(m_modes))
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
        labels.append(f"{m.label}\n(starved)" if starved and not many else m.label)
    ax.set_xticks(x, labels, fontsize="small", rotation=90 if many else 0)
    if many:  # no room for "(starved)" under every bar: starved modes' names in red
        for tick, m in zip(ax.get_xticklabels(), tc.per_mode):
            if m.mode in tc.starved_modes:
                tick.set_color("tab:red")
    ax.set_xlim(-0.6, m_modes - 0.4)
    from matplotlib.patches import Patch

    # proxies: the first code bar may itself be restyled as starved
    handles = [Patch(facecolor="tab:gray", label="data share"), Patch(facecolor="tab:blue", label="code share")]
    if tc.starved_modes:
        handles.append(Patch(facecolor="tab:red", edgecolor="black", hatch="//", label="starved code share"))
    _outside_legend(fig, ax, "bottom", handles=handles)
    ax.set_ylabel("%")
    ax.set_title(f"{cb.name}: codes per mode (TV {tc.allocation_tv:.2f})", fontsize="medium")
    return fig


def allocation_matrix(cb: CodebookReport) -> tuple[Any, Any, Any]:
    """The mode x code allocation behind :func:`plot_allocation_heatmap`, from the report's
    per-code, per-mode counts: ``(share, codes, owner)`` with ``share`` (M, L) the share of each
    live code's vectors that come from each mode (columns sum to 1), ``codes`` (L,) the live codes
    in column order and ``owner`` (L,) the mode each belongs to (the mode that sends it the most
    vectors, ties to the lowest id: the rule of tokens collapse). Columns are grouped by owner
    (mode 0 first), most used code first inside a group."""
    import numpy as np

    _need(cb.mode_counts, "per-code, per-mode counts", cb)
    counts = np.asarray(cb.mode_counts, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] != cb.size:
        raise UsageError(f"codebook '{cb.name}': mode_counts has shape {counts.shape}, expected ({cb.size}, modes)",
                         "build the report with vqdoctor.api.inspect (or leave mode_counts None)")  # fmt: skip
    per_code = counts.sum(1)
    live = np.flatnonzero(per_code > 0)
    owner = counts[live].argmax(1)
    order = np.lexsort((live, -per_code[live], owner))  # by owner, then most used, then code id
    codes, owner = live[order], owner[order]
    share = (counts[codes] / per_code[codes][:, None]).T
    return share, codes, owner


def plot_allocation_heatmap(cb: CodebookReport, ax: Axes | None = None) -> Figure:
    """Modes (rows) x live codes (columns, grouped by the mode each belongs to): the share of each
    code's vectors from each mode. Under tokens collapse most column groups are narrow or empty
    and one is wide; the right axis gives each mode's data and code share."""
    import numpy as np

    tc = cb.tokens_collapse
    if tc is None:
        _need(None, "tokens-collapse section", cb)
        raise AssertionError  # unreachable
    share, codes, owner = allocation_matrix(cb)
    m_modes, n_live = share.shape
    fig, ax = _figure(ax, (7.0, min(10.0, max(2.8, 1.3 + 0.22 * m_modes))))
    shown = share
    if n_live > HEATMAP_COLUMNS:  # thousands of codes in a few hundred pixels: average neighbouring columns
        starts = np.linspace(0, n_live, HEATMAP_COLUMNS, endpoint=False).astype(np.int64)
        shown = np.add.reduceat(share, starts, axis=1) / np.diff(np.append(starts, n_live))
    img = ax.imshow(shown, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest",
                    extent=(-0.5, n_live - 0.5, m_modes - 0.5, -0.5))  # fmt: skip
    bounds = np.searchsorted(owner, np.arange(m_modes + 1))  # column where each mode's group starts
    for b in bounds[1:-1]:
        if 0 < b < n_live:
            ax.axvline(b - 0.5, color="white", linewidth=0.8)
    centres = [(bounds[m] + bounds[m + 1] - 1) / 2 for m in range(m_modes) if bounds[m + 1] > bounds[m]]
    names = [tc.per_mode[m].label for m in range(m_modes) if bounds[m + 1] > bounds[m]]
    widths = [int(bounds[m + 1] - bounds[m]) for m in range(m_modes) if bounds[m + 1] > bounds[m]]
    shown = [(c, f"{n}\n({w:,})") for c, n, w in zip(centres, names, widths) if w >= n_live / 40 or len(names) <= 12]
    ax.set_xticks([c for c, _ in shown], [t for _, t in shown], fontsize="x-small")
    labels = [m.label for m in tc.per_mode]
    ax.set_yticks(range(m_modes), labels, fontsize="x-small" if m_modes > 20 else "small")
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(range(m_modes), [f"data {100 * m.data_share:.0f}% / codes {100 * m.code_share:.0f}%"
                                      for m in tc.per_mode], fontsize="x-small")  # fmt: skip
    for axis in (ax, right):
        for tick, m in zip(axis.get_yticklabels(), tc.per_mode):
            if m.mode in tc.starved_modes:
                tick.set_color("tab:red")
    dead = cb.size - n_live
    ax.set_xlabel(f"{n_live:,} live codes grouped by their mode (codes per group)"
                  + (f"; {dead:,} dead codes not shown" if dead else ""), fontsize="small")  # fmt: skip
    ax.set_ylabel("data mode (starved in red)" if tc.starved_modes else "data mode", fontsize="small")
    ax.set_title(f"{cb.name}: mode x code allocation (TV {tc.allocation_tv:.2f})", fontsize="medium")
    fig.colorbar(img, ax=[ax, right], label="share of the code's vectors",
                 fraction=0.04, pad=0.02)  # fmt: skip
    return fig


def _mode_labels(report: Report) -> list[str]:
    if report.embeddings_collapse is not None:
        return list(report.embeddings_collapse.labels)
    for cb in report.codebooks:
        if cb.tokens_collapse is not None:
            return [m.label for m in cb.tokens_collapse.per_mode]
    return []


def _points(ax: Axes, points: Sequence[Sequence[float]], modes: Sequence[int], colors: Sequence[Any],
            labels: Sequence[str]) -> tuple[bool, list[Any]]:  # fmt: skip
    """Draw the points coloured by mode; a density image (2-D histogram, each cell in its most
    frequent mode's colour, opacity by log count) above :data:`DENSITY_POINTS`. Returns (density
    drawn, legend handles: one per mode)."""
    import numpy as np
    from matplotlib.lines import Line2D

    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(modes, dtype=np.int64).reshape(-1)
    if len(m) != len(xy):
        m = np.zeros(len(xy), dtype=np.int64)
    m = np.clip(m, 0, len(colors) - 1) if len(colors) else np.zeros_like(m)
    if len(xy) > DENSITY_POINTS:
        bins = 220
        lo, hi = xy.min(0), xy.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        ij = np.minimum(((xy - lo) / span * bins).astype(np.int64), bins - 1)
        cell = ij[:, 1] * bins + ij[:, 0]
        n_modes = max(1, len(colors))
        hist = np.zeros((bins * bins, n_modes), dtype=np.int64)
        np.add.at(hist, (cell, m), 1)
        total = hist.sum(1)
        rgb = np.asarray(colors if len(colors) else [(0.2, 0.2, 0.2)], dtype=np.float64)[hist.argmax(1)]
        alpha = np.where(total > 0, 0.25 + 0.75 * np.log1p(total) / np.log1p(max(1, total.max())), 0.0)
        image = np.concatenate([rgb, alpha[:, None]], axis=1).reshape(bins, bins, 4)
        ax.imshow(image, origin="lower", extent=(lo[0], lo[0] + span[0], lo[1], lo[1] + span[1]),
                  aspect="auto", interpolation="nearest", zorder=1)  # fmt: skip
    else:
        size = 5 if len(xy) > 2000 else 9
        for mode in sorted(set(m.tolist())):
            pts = xy[m == mode]
            ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=0.55, linewidths=0, color=colors[mode], zorder=1)
    handles = []
    for mode in sorted(set(m.tolist())):  # legend proxies of one readable size
        name = labels[mode] if 0 <= mode < len(labels) else f"mode {mode}"
        handles.append(Line2D([], [], linestyle="", marker="s" if len(xy) > DENSITY_POINTS else "o", markersize=6,
                              color=colors[mode], label=name))  # fmt: skip
    return len(xy) > DENSITY_POINTS, handles


def projection_code_counts(report: Report) -> list[int] | None:
    """Usage count of each code drawn in the projection (row order of ``projection.codes``), from
    the projected codebook's counts; None when the report does not say which codes they are."""
    p = report.projection
    cb = _projected_codebook(report)
    if p is None or not p.codes or cb is None:
        return None
    counts = cb.counts or []
    ids = p.code_ids if p.code_ids is not None else (list(range(len(counts))) if len(counts) == len(p.codes) else None)
    if ids is None or len(ids) != len(p.codes) or any(not 0 <= i < len(counts) for i in ids):
        return None
    return [int(counts[i]) for i in ids]


def _projected_codebook(report: Report) -> CodebookReport | None:
    """The codebook (with counts) whose codes the projection draws: the one it names, else the
    first with counts."""
    p = report.projection
    if p is None:
        return None
    return next((cb for cb in report.codebooks if cb.counts is not None and (p.codebook is None or cb.name == p.codebook)), None)


def dead_code_groups(codes: Sequence[Sequence[float]], used: Sequence[int]) -> list[tuple[float, float, int]]:
    """Dead codes (``used == 0``) that fall on one point of the picture, as ``(x, y, how many)``,
    most first: codes closer than :data:`DUPLICATE_TOLERANCE` of the picture's span are one point."""
    import numpy as np

    xy = np.asarray(codes, dtype=np.float64).reshape(-1, 2)
    dead = xy[np.asarray(used) == 0]
    if not len(dead):
        return []
    span = float(np.max(xy.max(0) - xy.min(0))) or 1.0
    keys = np.round(dead / (DUPLICATE_TOLERANCE * span)).astype(np.int64)
    _, first, inverse, n = np.unique(keys, axis=0, return_index=True, return_inverse=True, return_counts=True)
    groups = [(float(dead[f, 0]), float(dead[f, 1]), int(c)) for f, c in zip(first, n)]
    return sorted(groups, key=lambda g: -g[2])


def _codes(ax: Axes, codes: Sequence[Sequence[float]], used: list[int] | None) -> list[Any]:
    """Codes over the points without hiding them: live codes as hollow circles with area by usage,
    dead codes as black x, a count beside each point where several dead codes coincide. Returns
    the legend handles."""
    import numpy as np
    from matplotlib.lines import Line2D

    def proxy(marker: str, label: str) -> Line2D:
        return Line2D([], [], linestyle="", marker=marker, markersize=7, markerfacecolor="none",
                      markeredgecolor="black", markeredgewidth=1.0, label=label)  # fmt: skip

    xy = np.asarray(codes, dtype=np.float64).reshape(-1, 2)
    if used is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=30, facecolors="none", edgecolors="black", linewidths=0.9, zorder=3)
        return [proxy("o", f"codes ({len(xy):,})")]
    u = np.asarray(used, dtype=np.float64)
    live = u > 0
    handles = []
    if live.any():
        area = 10 + 190 * u[live] / u[live].max()
        ax.scatter(xy[live, 0], xy[live, 1], s=area, facecolors="none", edgecolors="black", linewidths=0.9,
                   alpha=0.9, zorder=3)  # fmt: skip
        handles.append(proxy("o", f"live code, area by usage ({int(live.sum()):,})"))
    if (~live).any():
        groups = dead_code_groups(codes, used)
        ax.scatter(xy[~live, 0], xy[~live, 1], marker="x", s=30, color="black", linewidths=1.1, zorder=4)
        where = "at 1 point" if len(groups) == 1 else f"at {len(groups):,} points"
        handles.append(proxy("x", f"dead code ({int((~live).sum()):,}, {where})"))
        for x, y, n in [g for g in groups if g[2] > 1][:5]:
            ax.annotate(f"{n:,} dead codes", (x, y), xytext=(8, 8), textcoords="offset points", fontsize="small",
                        zorder=5, bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.85, "linewidth": 0.5},
                        arrowprops={"arrowstyle": "-", "linewidth": 0.6})  # fmt: skip
    return handles


def plot_projection(report: Report, ax: Axes | Sequence[Axes] | None = None) -> Figure:
    """2-D picture of the latents coloured by mode (a density above DENSITY_POINTS points), the
    codes drawn over them: hollow circles sized by usage, dead codes as x with the number that
    coincide. With the inputs' picture in the Report, the inputs are drawn beside it (two axes;
    pass two axes or None). Legends sit outside the pictures; past LEGEND_MODES modes a colour bar."""
    p = report.projection
    if p is None:
        raise UsageError("the report has no 2-D projection", hint="run `vqdoctor inspect` with --projection tsne|umap|pca")
    labels = _mode_labels(report)
    method = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}.get(p.method, p.method)
    n_modes = max(len(labels), max(p.latent_modes, default=-1) + 1, 1)
    colors = mode_colors(n_modes)
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(12.0 if p.inputs is not None else 6.8, 5.0), layout="constrained")
        fig._vqdoctor_made = True  # type: ignore[attr-defined]
        axes = list(fig.subplots(1, 2)) if p.inputs is not None else [fig.add_subplot()]
    else:
        axes = list(ax) if isinstance(ax, Sequence) else [ax]
        fig = cast("Figure", axes[0].figure)
    if p.inputs is not None and len(axes) >= 2:
        density, _ = _points(axes[0], p.inputs, p.latent_modes, colors, labels)
        axes[0].set_title(f"inputs ({method}{', density' if density else ''})", fontsize="medium")
        target = axes[1]
    else:
        target = axes[0]
    density, handles = _points(target, p.latents, p.latent_modes, colors, labels)
    code_handles = _codes(target, p.codes, projection_code_counts(report)) if p.codes else []
    what = "codes" if not p.codes else ("codes: o live (area by usage), x dead" if projection_code_counts(report) else "codes as o")
    target.set_title(f"latents ({method}{', density' if density else ''}), {what}", fontsize="medium")
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    if n_modes > LEGEND_MODES:  # a legend of 40 colours covers the picture: a colour bar of mode ids
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import BoundaryNorm, ListedColormap

        norm = BoundaryNorm([i - 0.5 for i in range(n_modes + 1)], n_modes)
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=ListedColormap(colors)), ax=axes, label="data mode",
                           fraction=0.03, pad=0.01)  # fmt: skip
        step = max(1, n_modes // 20)
        bar.set_ticks(range(0, n_modes, step))
        handles, where = code_handles, "bottom"
    else:
        handles, where = handles + code_handles, "right"
    cb = _projected_codebook(report)
    title = None
    if p.codes and cb is not None and projection_code_counts(report) is not None and len(p.codes) < cb.size:
        title = f"{len(p.codes):,} of {cb.size:,} codes drawn"  # the projection samples large codebooks
    _outside_legend(fig, target, where, handles=handles, title=title, title_fontsize="small")
    return fig


# ---------------------------------------------------------------- every applicable picture


def slug(name: str) -> str:
    """A file-name-safe form of a codebook or stack name."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s[:60].strip("-") or "codebook"


def iter_plots(report: Report) -> Iterator[tuple[str, str, Callable[[], Figure]]]:
    """(file stem, caption, draw) for every picture that applies to ``report``, in a stable order."""
    for _, stem, caption, draw in plots_by_section(report):
        yield stem, caption, draw


def plots_by_section(report: Report) -> Iterator[tuple[tuple[str, object], str, str, Callable[[], Figure]]]:
    """As :func:`iter_plots`, each picture with the part of the report it explains:
    ``("codebook", i)`` (1-based position in ``report.codebooks``), ``("stack", name)`` or
    ``("projection", None)``."""
    width = max(2, len(str(len(report.codebooks))))
    for i, cb in enumerate(report.codebooks, start=1):
        stem = f"{i:0{width}d}-{slug(cb.name)}"
        key = ("codebook", i)
        if cb.counts is not None:
            yield key, f"{stem}-rank-frequency", f"{cb.name}: rank-frequency of code usage", functools.partial(plot_rank_frequency, cb)
            yield key, f"{stem}-lorenz", f"{cb.name}: cumulative usage (Lorenz curve)", functools.partial(plot_lorenz, cb)
        if cb.geometry is not None or cb.w is not None:
            yield key, f"{stem}-spectrum", f"{cb.name}: singular spectrum", functools.partial(plot_spectrum, cb)
        if cb.tokens_collapse is not None:
            yield key, f"{stem}-allocation", f"{cb.name}: codes per data mode", functools.partial(plot_allocation, cb)
            if cb.mode_counts is not None:
                yield (key, f"{stem}-allocation-heatmap", f"{cb.name}: mode x code allocation",
                       functools.partial(plot_allocation_heatmap, cb))
    seen: dict[str, int] = {}
    stacks = dict.fromkeys(cb.stack for cb in report.codebooks)
    for stack in stacks:
        if len(stack_levels(report, stack)) > 1:
            s = slug(stack)
            seen[s] = seen.get(s, 0) + 1
            s = s if seen[s] == 1 else f"{s}-{seen[s]}"
            yield ("stack", stack), f"stack-{s}-levels", f"stack {stack}: per level", functools.partial(plot_levels, report, stack)
            if any(cb.counts for cb in stack_levels(report, stack)):
                yield (("stack", stack), f"stack-{s}-rank-frequency", f"stack {stack}: rank-frequency per level",
                       functools.partial(plot_levels_rank_frequency, report, stack))
    if report.projection is not None:
        yield ("projection", None), "projection", f"2-D picture ({report.projection.method})", functools.partial(plot_projection, report)


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes (Agg), ``figsize x dpi`` pixels, the dpi recorded in the PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    check_dpi(dpi)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=int(dpi))
    return buf.getvalue()


def save_plots(report: Report, out_dir: Path, *, dpi: int = DPI) -> list[Path]:
    """Write every applicable picture as ``out_dir/NAME.png`` (folder created) at ``dpi``; return the paths.

    Names are stable: ``NN-<codebook>-rank-frequency``, ``-lorenz``, ``-spectrum``, ``-allocation``,
    ``-allocation-heatmap`` (NN = the codebook's position in the report), ``stack-<stack>-levels``,
    ``stack-<stack>-rank-frequency``, ``projection``."""
    from vqdoctor.report.json_out import atomic_write_bytes

    check_dpi(dpi)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the plots folder {out_dir}: {e.strerror or e}", hint="pick a writable --plots DIR") from e
    paths = []
    for stem, _, draw in iter_plots(report):
        fig = draw()
        path = out_dir / f"{stem}.png"
        atomic_write_bytes(path, figure_png(fig, dpi))
        fig.clear()
        paths.append(path)
    return paths
