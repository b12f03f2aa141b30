"""`vqdoctor trend` over a planted SimVQ-like run: C frozen, W losing rank step by step."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import vqdoctor
from vqdoctor.cli.app import app
from vqdoctor.options import DataOptions
from vqdoctor.trend import step_of, trend

runner = CliRunner()
K, D, DC = 64, 8, 8
RANKS = {2: 8, 10: 4, 100: 2}  # step -> rank of W


def _simvq_state(rank: int) -> dict[str, torch.Tensor]:
    """vector-quantize-pytorch SimVQ layout: frozen C (K, d_c), W = code_transform (d, d_c) of ``rank``."""
    g = torch.Generator().manual_seed(0)
    frozen = torch.randn(K, DC, generator=g)
    u, _, v = torch.linalg.svd(torch.randn(D, DC, generator=g))
    s = torch.zeros(DC)
    s[:rank] = torch.linspace(1.0, 0.5, rank)
    w = u[:, :DC] @ torch.diag(s) @ v
    return {"quantizer.frozen_codebook": frozen, "quantizer.code_transform.weight": w.contiguous()}


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for step, rank in RANKS.items():
        torch.save(_simvq_state(rank), folder / f"step_{step}.pt")
    rng = np.random.default_rng(0)
    centres = 4.0 * rng.standard_normal((3, D))  # three data modes, for the allocation
    z = (centres[rng.integers(0, 3, 2000)] + 0.5 * rng.standard_normal((2000, D))).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    return folder, tmp_path / "z.npy"


def test_trend_reports_each_steps_w_rank_in_numeric_step_order(run, tmp_path):
    folder, z = run
    res = runner.invoke(app, ["trend", str(folder), "--latents", str(z), "--json", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "vqdoctor.trend/1"
    assert [p["step"] for p in doc["checkpoints"]] == [2, 10, 100]  # not text order (10, 100, 2)
    assert all(p["step_source"] == "file name" for p in doc["checkpoints"])
    rows = doc["rows"]
    assert [(r["step"], r["w_rank"]) for r in rows] == list(RANKS.items())
    assert rows[0]["w_effective_rank"] > rows[1]["w_effective_rank"] > rows[2]["w_effective_rank"]
    assert all(r["vectors"] == 2000 and r["utilization"] is not None for r in rows)
    metrics = {v["metric"]: v for v in doc["verdicts"]}
    assert metrics["w_effective_rank"]["status"] == "fail" and metrics["w_effective_rank"]["step"] == 2
    assert "W effective rank dropping" in metrics["w_effective_rank"]["message"]
    assert "W rank" in metrics["w_rank"]["message"]


def test_terminal_table_csv_and_plot(run, tmp_path):
    folder, z = run
    res = runner.invoke(app, ["trend", str(folder / "step_*.pt"), "--latents", str(z), "--csv", str(tmp_path / "t.csv"),
                              "--plot", str(tmp_path / "t.png")], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "W effective rank dropping" in res.stdout and "step 2:" in res.stdout
    table = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert [(int(r["step"]), int(r["w_rank"])) for r in table] == list(RANKS.items())
    png = (tmp_path / "t.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # --dpi scales the trend picture too: twice the dpi, twice the pixels; out of range refused up front
    res = runner.invoke(app, ["trend", str(folder / "step_*.pt"), "--latents", str(z), "--plot", str(tmp_path / "t2.png"),
                              "--dpi", "220"])
    assert res.exit_code == 0, res.output
    width = int.from_bytes(png[16:20], "big")
    assert int.from_bytes((tmp_path / "t2.png").read_bytes()[16:20], "big") == 2 * width
    res = runner.invoke(app, ["trend", str(folder / "step_*.pt"), "--latents", str(z), "--plot", str(tmp_path / "t3.png"),
                              "--dpi", "5"])
    assert res.exit_code == 2 and "--dpi" in res.output and not (tmp_path / "t3.png").exists()


def test_step_from_metadata_beats_the_file_name(tmp_path):
    torch.save({"state_dict": _simvq_state(8), "global_step": 3000, "epoch": 2}, tmp_path / "last.ckpt")
    save_file(_simvq_state(8), str(tmp_path / "a_7.safetensors"), metadata={"step": "500"})
    assert step_of(tmp_path / "last.ckpt") == (3000, "metadata: global_step")
    assert step_of(tmp_path / "a_7.safetensors") == (500, "metadata: step")
    torch.save(_simvq_state(8), tmp_path / "epoch=1-step=2000.pt")
    assert step_of(tmp_path / "epoch=1-step=2000.pt") == (2000, "file name")
    t = trend(tmp_path, data=DataOptions())  # data-free: W rank still reported
    assert [p.step for p in t.checkpoints] == [500, 2000, 3000]
    assert all(r.utilization is None and r.w_rank == 8 for r in t.rows)


def test_utilization_fall_is_a_verdict_after_the_peak(tmp_path):
    """A plain codebook whose codes pile up: usage falls after the second checkpoint."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(32, 4, generator=g)
    z = (base[torch.randint(0, 32, (3000,), generator=g)] + 0.01 * torch.randn(3000, 4, generator=g)).numpy()
    np.save(tmp_path / "z.npy", z)
    for step, alive in ((100, 32), (2000, 32), (5000, 8)):
        codes = base.clone()
        codes[alive:] += 100.0  # codes far from the data are never used
        save_file({"quantize.embedding.weight": codes}, str(tmp_path / f"ckpt-{step}.safetensors"))
    t = trend(tmp_path, data=DataOptions(latents=tmp_path / "z.npy"))
    util = [r.utilization for r in t.rows]
    assert util == [1.0, 1.0, 0.25]
    (v,) = [v for v in t.verdicts if v.metric == "utilization"]
    assert v.status == "fail" and v.step == 2000 and "utilization fell 75% after step 2,000" in v.message


def test_bad_runs_are_one_paragraph_errors(tmp_path):
    res = runner.invoke(app, ["trend", str(tmp_path / "nothing_*.pt")])
    assert res.exit_code == 2 and "No checkpoints" in res.output
    torch.save(_simvq_state(8), tmp_path / "final.pt")
    res = runner.invoke(app, ["trend", str(tmp_path)])
    assert res.exit_code == 2 and "training step" in res.output
    res = runner.invoke(app, ["trend", str(tmp_path), "--plot", str(tmp_path / "x.gif")])
    assert res.exit_code == 2 and "picture format" in res.output


def test_every_row_is_what_inspect_reports_for_that_checkpoint(run):
    """Modes inferred once for the run give each checkpoint's own inspect numbers."""
    folder, z = run
    t = trend(folder, data=DataOptions(latents=z))
    for row in t.rows:
        rep = vqdoctor.inspect(row.checkpoint, latents=z, analysis=vqdoctor.AnalysisOptions(projection="none"))
        (cb,) = rep.codebooks
        assert row.allocation_tv is not None and row.allocation_tv == cb.tokens_collapse.allocation_tv
        assert (row.utilization, row.perplexity, row.dead_codes) == (cb.usage.utilization, cb.usage.perplexity, cb.usage.dead_codes)
        assert (row.w_rank, row.w_effective_rank, row.effective_rank) == (cb.w.rank, cb.w.effective_rank, cb.geometry.effective_rank)


def test_output_paths_are_checked_before_any_checkpoint_is_read(run, tmp_path):
    folder, z = run
    for flag in ("--json", "--csv", "--plot"):
        res = runner.invoke(app, ["trend", str(folder), "--latents", str(z), flag, "/proc/missing/t.png"])
        assert res.exit_code == 2 and "/proc/missing/t.png" in res.output, res.output
        assert "[1/" not in res.output  # no checkpoint was analysed first
    res = runner.invoke(app, ["trend", str(folder), "--latents", str(z), "--csv", str(tmp_path / "missing" / "t.csv")])
    assert res.exit_code == 0 and (tmp_path / "missing" / "t.csv").is_file(), res.output  # a missing folder is made


def test_lightning_checkpoints_of_a_vqp_residual_vq_give_ema_usage_and_one_line_per_level(tmp_path):
    """A real vector-quantize-pytorch ResidualVQ trained (EMA) between saves, Lightning-style files
    whose global_step orders them (the names do not): per step and level, the EMA usage and the
    data numbers are inspect's for that checkpoint; the plot draws one line per level."""
    vqp = pytest.importorskip("vector_quantize_pytorch")
    from vqdoctor.report.trend_out import plot_trend

    torch.manual_seed(0)
    rvq = vqp.ResidualVQ(dim=8, codebook_size=16, num_quantizers=2, decay=0.8).train()
    g = torch.Generator().manual_seed(0)
    saved = {}
    for step, name in ((50, "b.ckpt"), (150, "c.ckpt"), (400, "a.ckpt")):
        for _ in range(5):
            rvq(torch.randn(4, 25, 8, generator=g))
        state = {"model.quantizer." + k: v.clone() for k, v in rvq.state_dict().items()}
        torch.save({"state_dict": state, "global_step": step, "epoch": 0}, tmp_path / name)
        saved[step] = state
    np.save(tmp_path / "z.npy", torch.randn(900, 8, generator=g).numpy())
    t = trend(tmp_path, data=DataOptions(latents=tmp_path / "z.npy"))
    assert [p.step for p in t.checkpoints] == [50, 150, 400]
    assert t.codebooks == ["quantizer.layers.0", "quantizer.layers.1"]
    for point in t.checkpoints:
        rep = vqdoctor.inspect(saved[point.step], latents=tmp_path / "z.npy", analysis=vqdoctor.AnalysisOptions(projection="none"))
        rows = [r for r in t.rows if r.step == point.step]
        assert [r.codebook for r in rows] == [cb.name for cb in rep.codebooks]
        for row, cb in zip(rows, rep.codebooks):
            assert cb.ema is not None and row.ema_perplexity == cb.ema.perplexity
            assert row.ema_dead_codes == cb.ema.dead_codes_relative
            assert (row.vectors, row.utilization, row.perplexity) == (900, cb.usage.utilization, cb.usage.perplexity)
    emas = [r.ema_perplexity for r in t.rows]
    assert len(set(emas)) > 2  # the EMA buffers moved between the saves
    fig = plot_trend(t)
    lines = {ax.get_title(): [ln.get_label() for ln in ax.get_lines()] for ax in fig.axes}
    assert lines["EMA perplexity"] == t.codebooks and lines["utilization"] == t.codebooks
    xs = fig.axes[0].get_lines()[0].get_xdata()
    assert list(xs) == [50, 150, 400]
