"""Every picture renders (Agg) to a real PNG; stable file names; ax=None returns the figure."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from vqdoctor.errors import UsageError
from vqdoctor.report import plots
from vqdoctor.report.plots import figure_png, save_plots
from vqdoctor.report.schema import Projection2D

PNG = b"\x89PNG\r\n\x1a\n"


def _png_ok(data: bytes) -> None:
    assert data[:8] == PNG
    assert len(data) > 5_000  # something was drawn


def test_codebook_plots(example_report):
    plain, l0, l1, l2, simvq, ema_only = example_report.codebooks
    for fig in (
        plots.plot_rank_frequency(plain),
        plots.plot_lorenz(plain),
        plots.plot_spectrum(plain),
        plots.plot_spectrum(simvq),  # codebook and W
        plots.plot_spectrum(ema_only),
        plots.plot_allocation(plain),
        plots.plot_levels(example_report, "rvq"),
        plots.plot_levels_rank_frequency(example_report, "rvq"),
        plots.plot_projection(example_report),
    ):
        _png_ok(figure_png(fig))


def test_spectrum_shows_w(example_report):
    fig = plots.plot_spectrum(example_report.codebooks[4])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(s.startswith("codebook") for s in labels) and any(s.startswith("W (rank 2") for s in labels)


def test_lorenz_legend_has_gini(example_report):
    fig = plots.plot_lorenz(example_report.codebooks[0])
    assert any("Gini" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_given_axes_are_used(example_report):
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    assert plots.plot_lorenz(example_report.codebooks[0], ax=ax) is fig
    assert len(fig.axes) == 1


def test_projection_side_by_side(example_report):
    assert len(plots.plot_projection(example_report).axes) == 2
    alone = dataclasses.replace(example_report, projection=dataclasses.replace(example_report.projection, inputs=None))
    assert len(plots.plot_projection(alone).axes) == 1


def test_missing_sections_are_user_errors(example_report, data_free_report):
    ema_only = example_report.codebooks[5]
    with pytest.raises(UsageError, match="counts"):
        plots.plot_rank_frequency(ema_only)
    with pytest.raises(UsageError):
        plots.plot_allocation(ema_only)
    with pytest.raises(UsageError):
        plots.plot_projection(data_free_report)
    with pytest.raises(UsageError):
        plots.plot_levels(example_report, "no-such-stack")
    with pytest.raises(UsageError, match="no level of stack 'ema_vq' has per-code usage counts"):
        plots.plot_levels_rank_frequency(example_report, "ema_vq")


def test_save_plots_names_and_files(example_report, tmp_path):
    out = tmp_path / "plots" / "deep"
    paths = save_plots(example_report, out)
    names = [p.name for p in paths]
    assert names == [
        "01-quantize-embedding-rank-frequency.png",
        "01-quantize-embedding-lorenz.png",
        "01-quantize-embedding-spectrum.png",
        "01-quantize-embedding-allocation.png",
        *[f"0{i + 2}-rvq-layers-{i}-codebook-embed-{k}.png" for i in range(3) for k in ("rank-frequency", "lorenz", "spectrum")],
        "05-simvq-rank-frequency.png",
        "05-simvq-lorenz.png",
        "05-simvq-spectrum.png",
        "06-ema-vq-codebook-embed-spectrum.png",
        "stack-rvq-levels.png",
        "stack-rvq-rank-frequency.png",
        "projection.png",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temp files left
    for p in paths:
        _png_ok(p.read_bytes())


def test_save_plots_data_free(data_free_report, tmp_path):
    assert [p.name for p in save_plots(data_free_report, tmp_path)] == ["01-quantize-embedding-spectrum.png"]


def test_importing_the_report_package_is_light():
    code = (
        "import sys, vqdoctor.report.plots, vqdoctor.report.html, vqdoctor.report.json_out\n"
        "print(','.join(m for m in sys.modules if m.startswith('matplotlib')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_no_pyplot_needed():
    tests = str(Path(__file__).resolve().parents[1])
    code = (
        "import sys\n"
        f"sys.path.insert(0, {tests!r})\n"
        "from test_report.conftest import make_example_report\n"
        "from vqdoctor.report.plots import iter_plots, figure_png\n"
        "r = make_example_report()\n"
        "[figure_png(draw()) for _, _, draw in iter_plots(r)]\n"
        "print('matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- palette, heatmap, codes, density, dpi


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _png_dpi(data: bytes) -> float:
    at = data.index(b"pHYs")
    x_per_metre = int.from_bytes(data[at + 4 : at + 8], "big")
    assert data[at + 12] == 1  # unit: metre
    return x_per_metre * 0.0254


def test_palette_distinct_for_many_modes():
    import matplotlib
    import numpy as np

    tab10 = [tuple(matplotlib.colormaps["tab10"](i)[:3]) for i in range(10)]
    assert plots.mode_colors(10) == tab10  # the familiar colours first
    for n in (40, 120):
        colors = plots.mode_colors(n)
        assert len(colors) == n and len(set(colors)) == n
        lab = plots._lab(colors)
        d = np.sqrt(((lab[:, None] - lab[None]) ** 2).sum(-1))
        d[np.diag_indices(n)] = np.inf
        assert d.min() > (15.0 if n == 40 else 10.0)  # CIELAB distance (measured 16.7, 15.2): tell-apart, not merely unequal
    assert plots.mode_colors(40)[:20] == plots.mode_colors(20)  # a mode keeps its colour as modes grow


def _heatmap_codebook(example_report):
    """K = 6 codes, 3 modes, written out: live codes 0, 2, 3, 5; mode 2 owns none."""
    import torch

    from vqdoctor.core.collapse import tokens_collapse

    mode_counts = [[5, 1, 0], [0, 0, 0], [2, 7, 0], [9, 0, 1], [0, 0, 0], [0, 3, 3]]
    tc = tokens_collapse(torch.tensor(mode_counts), dead_code_modes=None, labels=["a", "b", "c"], mode_source="labels")
    cb = dataclasses.replace(example_report.codebooks[0], size=6, counts=[6, 0, 9, 10, 0, 6], mode_counts=mode_counts,
                             tokens_collapse=tc)  # fmt: skip
    return cb, tc


def test_allocation_heatmap_matches_the_allocation(example_report):
    import numpy as np

    cb, tc = _heatmap_codebook(example_report)
    share, codes, owner = plots.allocation_matrix(cb)
    # columns: mode 0's codes (3: 10 vectors, then 0: 6), mode 1's (2: 9, then 5: 6 - a tie 3/3 goes to mode 1)
    assert codes.tolist() == [3, 0, 2, 5] and owner.tolist() == [0, 0, 1, 1]
    assert [int((owner == m).sum()) for m in range(3)] == [m.codes for m in tc.per_mode] == [2, 2, 0]
    assert share.shape == (3, tc.live_codes)
    np.testing.assert_allclose(share[:, 0], [0.9, 0.0, 0.1])
    np.testing.assert_allclose(share[:, 3], [0.0, 0.5, 0.5])
    np.testing.assert_allclose(share.sum(0), 1.0)
    fig = plots.plot_allocation_heatmap(cb)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_images()[0].get_array(), share)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert "4 live codes" in ax.get_xlabel() and "2 dead codes not shown" in ax.get_xlabel()
    right = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert right == ["data 52% / codes 50%", "data 35% / codes 50%", "data 13% / codes 0%"]  # 16/31, 11/31, 4/31 of the vectors
    _png_ok(figure_png(fig))
    stems = [stem for stem, _, _ in plots.iter_plots(dataclasses.replace(example_report, codebooks=[cb]))]
    assert "01-quantize-embedding-allocation-heatmap" in stems


def test_allocation_heatmap_needs_the_counts(example_report):
    with pytest.raises(UsageError, match="per-code, per-mode counts"):
        plots.plot_allocation_heatmap(example_report.codebooks[0])  # the fixture has shares, not counts


def _projection_report(example_report, *, n_points: int, codes, counts, modes: int = 3):
    import numpy as np

    rng = np.random.default_rng(0)
    m = rng.integers(0, modes, n_points)
    pts = rng.normal(size=(n_points, 2)) + 6 * np.stack([np.cos(m), np.sin(m)], 1)
    cb = dataclasses.replace(example_report.codebooks[0], size=len(counts), counts=counts)
    p = Projection2D(method="pca", latents=pts.tolist(), latent_modes=m.tolist(), codes=codes, inputs=None,
                     seconds=0.0, codebook=cb.name, code_ids=list(range(len(codes))))  # fmt: skip
    return dataclasses.replace(example_report, codebooks=[cb], projection=p, embeddings_collapse=None)


def test_projection_codes_sized_by_usage_and_dead_codes_counted(example_report):
    codes = [[0.0, 0.0], [5.0, 5.0], [-5.0, 1.0], [-5.0, 1.0], [-5.0, 1.0], [-5.0, 1.0 + 1e-6], [3.0, -4.0]]
    counts = [100, 25, 0, 0, 0, 0, 0]
    r = _projection_report(example_report, n_points=300, codes=codes, counts=counts)
    assert plots.projection_code_counts(r) == counts
    assert plots.dead_code_groups(codes, counts) == [(-5.0, 1.0, 4), (3.0, -4.0, 1)]
    fig = plots.plot_projection(r)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["4 dead codes"]  # one annotation, the lone dead code needs none
    live = [c for c in ax.collections if len(c.get_offsets()) == 2]
    assert len(live) == 1 and live[0].get_sizes().tolist() == [200.0, 10 + 190 * 25 / 100]  # area by usage
    assert max(c.get_zorder() for c in ax.collections) > min(c.get_zorder() for c in ax.collections)  # codes above points
    assert ax.get_legend() is None and len(fig.legends) == 1  # the legend sits outside the picture
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["ring", "blob", "spiral", "live code, area by usage (2)", "dead code (5, at 2 points)"]


def test_projection_draws_a_density_past_the_threshold(example_report):
    codes, counts = [[0.0, 0.0], [1.0, 1.0]], [3, 0]
    many = plots.plot_projection(_projection_report(example_report, n_points=plots.DENSITY_POINTS + 1, codes=codes, counts=counts))
    ax = many.axes[0]
    assert len(ax.get_images()) == 1 and "density" in ax.get_title()
    assert all(len(c.get_offsets()) <= len(codes) for c in ax.collections)  # no 20k-point scatter
    few = plots.plot_projection(_projection_report(example_report, n_points=plots.DENSITY_POINTS, codes=codes, counts=counts))
    assert not few.axes[0].get_images() and "density" not in few.axes[0].get_title()
    assert sum(len(c.get_offsets()) for c in few.axes[0].collections) == plots.DENSITY_POINTS + len(codes)
    _png_ok(figure_png(many))


def test_projection_many_modes_uses_a_colour_bar(example_report):
    r = _projection_report(example_report, n_points=800, codes=[[0.0, 0.0]], counts=[5], modes=40)
    fig = plots.plot_projection(r)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "data mode"  # the colour bar
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["live code, area by usage (1)"]


def test_dpi_sets_pixels_and_metadata(example_report, tmp_path):
    fig = plots.plot_lorenz(example_report.codebooks[0])
    w, h = fig.get_size_inches()
    for dpi in (50, 110, 300):
        data = figure_png(fig, dpi)
        assert _png_size(data) == (int(w * dpi), int(h * dpi))  # figsize x dpi (matplotlib truncates)
        assert _png_dpi(data) == pytest.approx(dpi, abs=0.05)
    path = save_plots(example_report, tmp_path, dpi=72)[0]
    fig = plots.plot_rank_frequency(example_report.codebooks[0])
    assert _png_size(path.read_bytes()) == tuple(int(v * 72) for v in fig.get_size_inches()) == (460, 288)


@pytest.mark.parametrize("dpi", [49, 601, 0, -110])
def test_dpi_out_of_range_is_refused(example_report, tmp_path, dpi):
    with pytest.raises(UsageError, match=rf"--dpi {dpi} is out of range: it must be a whole number between 50 and 600"):
        save_plots(example_report, tmp_path / "p", dpi=dpi)
    assert not (tmp_path / "p").exists()  # refused before any work


def test_projection_says_when_only_some_codes_are_drawn(example_report):
    r = _projection_report(example_report, n_points=200, codes=[[0.0, 0.0], [1.0, 1.0]], counts=[4, 0, 7, 0, 0])
    r = dataclasses.replace(r, projection=dataclasses.replace(r.projection, code_ids=[2, 4]))
    assert plots.projection_code_counts(r) == [7, 0]  # code_ids map the drawn rows to the codebook's codes
    fig = plots.plot_projection(r)
    assert fig.legends[0].get_title().get_text() == "2 of 5 codes drawn"


def test_levels_rank_frequency_one_curve_per_level(example_report):
    import numpy as np

    fig = plots.plot_levels_rank_frequency(example_report, "rvq")
    lines = fig.axes[0].get_lines()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["L0", "L1 (3 dead)", "L2 (5 dead)", "uniform"]
    # level 2: counts 900, 60, 40 then five zeros over 1,000 vectors and 8 codes: usage / (N/K) = 7.2, 0.48, 0.32
    y = lines[2].get_ydata()
    np.testing.assert_allclose(y[:3], [7.2, 0.48, 0.32])
    assert np.isnan(y[3:]).all()  # dead codes leave the log axis
    np.testing.assert_allclose(lines[2].get_xdata(), (np.arange(8) + 0.5) / 8)


def test_allocation_heatmap_averages_columns_of_large_codebooks(example_report):
    import numpy as np
    import torch

    from vqdoctor.core.collapse import tokens_collapse

    # 1,600 live codes: the first 1,000 all mode 0, the rest 3 vectors of mode 1 and 1 of mode 0
    mode_counts = [[2, 0]] * 1000 + [[1, 3]] * 600
    tc = tokens_collapse(torch.tensor(mode_counts), dead_code_modes=None, labels=["a", "b"], mode_source="labels")
    cb = dataclasses.replace(example_report.codebooks[0], size=1600, mode_counts=mode_counts, tokens_collapse=tc)
    shown = plots.plot_allocation_heatmap(cb).axes[0].get_images()[0].get_array()
    assert shown.shape == (2, plots.HEATMAP_COLUMNS)  # 2 codes per column
    np.testing.assert_allclose(shown[:, :500], [[1.0] * 500, [0.0] * 500])
    np.testing.assert_allclose(shown[:, 500:], [[0.25] * 300, [0.75] * 300])


def test_given_axes_get_their_own_legend(example_report):
    from matplotlib.figure import Figure

    fig = Figure(layout="constrained")
    left, right = fig.subplots(1, 2)
    plots.plot_projection(dataclasses.replace(example_report, projection=dataclasses.replace(
        example_report.projection, inputs=None)), ax=right)  # fmt: skip
    assert not fig.legends and right.get_legend() is not None and left.get_legend() is None
    loc = right.get_legend().get_bbox_to_anchor().transformed(right.transAxes.inverted())
    assert loc.x0 >= 1.0  # anchored right of the axes, not over the points
