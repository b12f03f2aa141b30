"""`--metric` and the cosine evidence through Typer's runner: ls, inspect, check and fix on
vector-quantize-pytorch cosine checkpoints written in tmp_path."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from vqdoctor.cli.app import app

vqp = pytest.importorskip("vector_quantize_pytorch")
warnings.filterwarnings("ignore", module="vector_quantize_pytorch")
runner = CliRunner()
K, D = 128, 8


def _latents(n: int = 6000) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal((n, D)) * 3 + 1).astype(np.float32)


@pytest.fixture
def cosine_files(tmp_path: Path) -> tuple[Path, Path, torch.nn.Module]:
    x = torch.from_numpy(_latents())
    torch.manual_seed(0)
    vq = vqp.VectorQuantize(dim=D, codebook_size=K, use_cosine_sim=True, decay=0.8)
    vq.train()
    for _ in range(3):
        vq(x[None])
    vq.eval()
    ckpt, lat = tmp_path / "cos.safetensors", tmp_path / "z.npy"
    save_file({k: v.contiguous() for k, v in vq.state_dict().items()}, str(ckpt))
    np.save(lat, x.numpy())
    return ckpt, lat, vq


def _inspect_json(ckpt: Path, lat: Path, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["inspect", str(ckpt), "--latents", str(lat), "--projection", "none", "--device", "cpu",
                              "--json", str(out), *extra])
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


def test_ls_shows_cosine_with_its_evidence(cosine_files) -> None:
    ckpt, _, _ = cosine_files
    res = runner.invoke(app, ["ls", str(ckpt)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "metric: cosine (EMA buffers: embed = l2norm(embed_avg / cluster_size) for " in res.output
    assert f"all {K} codes unit-norm ±1e-3)" in res.output
    res = runner.invoke(app, ["ls", str(ckpt), "--json", "-", "--metric", "euclidean"])
    (cb,) = json.loads(res.output)["codebooks"]
    assert (cb["metric"], cb["metric_source"]) == ("euclidean", "flag")
    assert cb["metric_evidence"].startswith("--metric euclidean overrides the detected cosine, detected: EMA buffers")


def test_inspect_measures_in_the_quantizers_space(cosine_files, tmp_path: Path) -> None:
    ckpt, lat, vq = cosine_files
    x = torch.from_numpy(np.load(lat))
    with torch.no_grad():
        quantize, indices, _ = vq(x[None])
    cos = _inspect_json(ckpt, lat, tmp_path)["codebooks"][0]
    assert (cos["metric"], cos["metric_source"]) == ("cosine", "detected")
    assert cos["usage"]["used_codes"] == int(torch.unique(indices).numel())
    assert cos["usage"]["quantization_mse"] == pytest.approx(float(F.mse_loss(quantize[0], F.normalize(x, dim=-1))), rel=1e-4)
    assert cos["usage"]["space"].endswith("(cosine)")
    eu = _inspect_json(ckpt, lat, tmp_path, "--metric", "euclidean")["codebooks"][0]
    assert (eu["metric"], eu["metric_source"]) == ("euclidean", "flag")
    assert eu["usage"]["quantization_mse"] == pytest.approx(float(F.mse_loss(quantize[0], x)), rel=1e-4)
    assert eu["usage"]["quantization_mse"] > 100 * cos["usage"]["quantization_mse"]


def test_check_takes_the_flag(cosine_files, tmp_path: Path) -> None:
    ckpt, lat, _ = cosine_files
    out = tmp_path / "check.json"
    res = runner.invoke(app, ["check", str(ckpt), "--latents", str(lat), "--device", "cpu", "--metric", "cosine",
                              "--json", str(out)])
    assert res.exit_code in (0, 1), res.output
    doc = json.loads(out.read_text())
    (cb,) = doc["report"]["codebooks"]
    assert (cb["metric"], cb["metric_source"]) == ("cosine", "flag")
    assert "agrees with the detected cosine" in cb["metric_evidence"]


@pytest.mark.parametrize("command", ["ls", "inspect", "check", "fix kmeans"])
def test_unknown_metric_is_a_clear_error(cosine_files, tmp_path: Path, command: str) -> None:
    ckpt, lat, _ = cosine_files
    args = [*command.split(), str(ckpt), "--metric", "manhattan"]
    if command != "ls":
        args += ["--latents", str(lat), "--device", "cpu"]
    if command.startswith("fix"):
        args += ["--out", str(tmp_path / "o.safetensors")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "--metric 'manhattan' is not one of auto, euclidean, cosine" in res.output and "Traceback" not in res.output


def test_fix_kmeans_on_a_bf16_cosine_checkpoint_loads_and_is_used_by_the_library(tmp_path: Path) -> None:
    x = torch.from_numpy(_latents(20000))
    torch.manual_seed(0)
    state = dict(vqp.VectorQuantize(dim=D, codebook_size=K, use_cosine_sim=True).state_dict())
    dirs = F.normalize(torch.randn(3, D, generator=torch.Generator().manual_seed(1)), dim=1)
    state["_codebook.embed"] = dirs[torch.arange(K) % 3][None].clone()  # collapsed: 3 directions
    ckpt, lat, out = tmp_path / "c.safetensors", tmp_path / "z.npy", tmp_path / "fixed.safetensors"
    save_file({k: v.to(torch.bfloat16).contiguous() if v.is_floating_point() else v for k, v in state.items()}, str(ckpt))
    np.save(lat, x.numpy())
    res = runner.invoke(app, ["fix", "kmeans", str(ckpt), "--latents", str(lat), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "(cosine)" in res.output  # the k-means note names the metric it ran in
    fixed = load_file(str(out))
    assert fixed["_codebook.embed"].dtype == torch.bfloat16
    vq = vqp.VectorQuantize(dim=D, codebook_size=K, use_cosine_sim=True)
    vq.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in fixed.items()}, strict=True)
    with torch.no_grad():
        _, indices, _ = vq.eval()(x[None])
    assert torch.unique(indices).numel() >= 0.95 * K


def test_merge_reports_with_the_metric_the_shards_were_gathered_with(cosine_files, tmp_path: Path) -> None:
    # merge takes no --metric: the statistics record it (options and codebook identities)
    ckpt, lat, _ = cosine_files
    files = []
    for i in range(2):
        f = tmp_path / f"s{i}.safetensors"
        res = runner.invoke(app, ["inspect", str(ckpt), "--latents", str(lat), "--device", "cpu", "--metric", "euclidean",
                                  "--shard", f"{i}/2", "--save-stats", str(f)])
        assert res.exit_code == 0, res.output
        files.append(str(f))
    out = tmp_path / "merged.json"
    res = runner.invoke(app, ["merge", *files, "--json", str(out)])
    assert res.exit_code == 0, res.output
    (cb,) = json.loads(out.read_text())["codebooks"]
    assert (cb["metric"], cb["metric_source"]) == ("euclidean", "flag")
    single = _inspect_json(ckpt, lat, tmp_path, "--metric", "euclidean")["codebooks"][0]
    assert cb["usage"]["quantization_mse"] == pytest.approx(single["usage"]["quantization_mse"], rel=1e-9)
