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
