"""`--dpi` on inspect and merge: the pictures' resolution (PNG pixels = figure size x dpi, the
dpi recorded in the file), its range checked before any work, one paragraph, exit 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from vqdoctor.cli.app import app
from vqdoctor.cli.common import DEFAULT_DPI, FLAG_RANGES
from vqdoctor.report import plots

runner = CliRunner()


def _png(data: bytes) -> tuple[int, int, float]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at = data.index(b"pHYs")
    return (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"),
            int.from_bytes(data[at + 4 : at + 8], "big") * 0.0254)  # fmt: skip


@pytest.fixture
def model_and_latents(tmp_path):
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(16, 4, generator=g)
    path = tmp_path / "m.safetensors"
    save_file({"quantizer._codebook.embed": codes[None].contiguous(), "quantizer._codebook.cluster_size": torch.ones(1, 16),
               "quantizer._codebook.embed_avg": codes[None].clone(), "quantizer._codebook.initted": torch.tensor([1.0])},
              str(path))  # fmt: skip
    rng = np.random.default_rng(0)
    x = (codes.numpy()[rng.integers(0, 16, 2000)] + 0.05 * rng.standard_normal((2000, 4))).astype(np.float32)
    np.save(tmp_path / "z.npy", x)
    return path, tmp_path / "z.npy"


def test_the_cli_default_is_the_plots_default():
    assert DEFAULT_DPI == plots.DPI and FLAG_RANGES["--dpi"] == plots.DPI_RANGE


def test_dpi_sets_the_png_size_and_metadata(model_and_latents, tmp_path):
    ckpt, z = model_and_latents
    out = tmp_path / "plots"
    res = runner.invoke(app, ["inspect", str(ckpt), "--latents", str(z), "--plots", str(out), "--dpi", "55",
                              "--html", str(tmp_path / "r.html"), "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.glob("*.png"))
    assert any(n.endswith("-allocation-heatmap.png") for n in names), names  # modes are inferred: the heatmap is drawn
    w, h, dpi = _png((out / [n for n in names if n.endswith("-rank-frequency.png")][0]).read_bytes())
    assert (w, h) == (int(6.4 * 55), int(4.0 * 55)) and dpi == pytest.approx(55, abs=0.05)  # rank-frequency is 6.4 x 4 in
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert html.count("<img ") == len(names)


@pytest.mark.parametrize("cmd", [["inspect"], ["merge", "no-such-stats.pt"]], ids=["inspect", "merge"])
@pytest.mark.parametrize("dpi", ["49", "601"])
def test_dpi_out_of_range_is_refused_before_work(cmd, dpi, model_and_latents, tmp_path):
    ckpt, z = model_and_latents
    args = [*cmd, *([str(ckpt), "--latents", str(z)] if cmd == ["inspect"] else []), "--plots", str(tmp_path / "p"), "--dpi", dpi]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert f"--dpi {dpi} is out of range: it must be between 50 and 600." in res.output
    assert "Traceback" not in res.output and not (tmp_path / "p").exists()
