"""`vqdoctor ls` through Typer's runner, on checkpoints written in tmp_path."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from vqdoctor.cli.app import app

runner = CliRunner()


def _rvq_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {"encoder.conv.weight": torch.randn(8, 1, 7, generator=g)}
    for i in range(3):
        p = f"quantizer.vq.layers.{i}._codebook"
        sd |= {f"{p}.inited": torch.tensor([1.0]), f"{p}.cluster_size": torch.rand(32, generator=g),
               f"{p}.embed": torch.randn(32, 8, generator=g), f"{p}.embed_avg": torch.randn(32, 8, generator=g)}
    return sd


@pytest.fixture
def rvq_file(tmp_path):
    path = tmp_path / "rvq.safetensors"
    save_file(_rvq_state(), str(path))
    return path


def test_ls_table(rvq_file):
    res = runner.invoke(app, ["ls", str(rvq_file)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "quantizer.vq.layers.2" in res.output and "encodec" in res.output and "3 codebook(s)" in res.output


def test_ls_json_stdout_and_file(rvq_file, tmp_path):
    res = runner.invoke(app, ["ls", str(rvq_file), "--json", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "vqdoctor.ls/1" and doc["checkpoint"]["format"] == "safetensors"
    cb = doc["codebooks"][1]
    assert {k: cb[k] for k in ("name", "stack", "kind", "size", "dim", "level", "metric", "ema", "w")} == {
        "name": "quantizer.vq.layers.1", "stack": "quantizer.vq", "kind": "ema", "size": 32, "dim": 8,
        "level": 1, "metric": "euclidean", "ema": True, "w": False}
    assert cb["keys"]["codes"] == "quantizer.vq.layers.1._codebook.embed"
    out = tmp_path / "ls.json"
    res = runner.invoke(app, ["ls", str(rvq_file), "--json", str(out), "--codebook", "*layers.2*"])
    assert res.exit_code == 0, res.output
    assert [c["level"] for c in json.loads(out.read_text())["codebooks"]] == [2]


def test_ls_pickle_lightning_nesting(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in _rvq_state().items()}, "epoch": 3}, path)
    res = runner.invoke(app, ["ls", str(path), "--json", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(doc["codebooks"]) == 3 and doc["checkpoint"]["nesting"]


@pytest.mark.parametrize("columns", [80, 100])
def test_ls_readable_at_80_and_100_columns(rvq_file, columns):
    """No word is split across lines: every name, kind and EMA buffer role appears whole."""
    res = runner.invoke(app, ["ls", str(rvq_file)], env={"COLUMNS": str(columns)})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    words = {w.strip(",") for line in lines for w in line.split()}
    for whole in ("quantizer.vq.layers.0", "quantizer.vq.layers.2", "cluster_size", "embed_avg", "euclidean", "ema"):
        assert whole in words, (whole, res.stdout)


def test_ls_nesting_picks_the_ema_weights(tmp_path):
    path = tmp_path / "model.ckpt"
    main = {"model." + k: v for k, v in _rvq_state().items()}
    ema = {"model." + k: v for k, v in _rvq_state().items() if "layers.0" in k or "encoder" in k}
    torch.save({"state_dict": main, "ema": ema, "epoch": 3}, path)
    res = runner.invoke(app, ["ls", str(path), "--nesting", "ema", "--json", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(doc["codebooks"]) == 1 and "ema" in " ".join(doc["checkpoint"]["nesting"])
    res = runner.invoke(app, ["ls", str(path), "--json", "-"])
    assert len(json.loads(res.stdout)["codebooks"]) == 3


def test_ls_no_codebook_is_plain_and_exit_zero(tmp_path):
    path = tmp_path / "lm.safetensors"
    save_file({"model.embed_tokens.weight": torch.zeros(100, 8), "lm_head.weight": torch.zeros(100, 8)}, str(path))
    res = runner.invoke(app, ["ls", str(path)])
    assert res.exit_code == 0 and "No codebook found" in res.output


def test_ls_codebook_free_listed_separately(tmp_path):
    path = tmp_path / "lfq.safetensors"
    save_file({"quantizer.mask": 2 ** torch.arange(5, -1, -1)}, str(path))
    res = runner.invoke(app, ["ls", str(path), "--json", "-"])
    doc = json.loads(res.stdout)
    assert doc["codebooks"] == [] and doc["codebook_free"][0]["kind"] == "lfq"


def test_ls_bad_glob_and_missing_file(rvq_file, tmp_path):
    res = runner.invoke(app, ["ls", str(rvq_file), "--codebook", "nope*"])
    assert res.exit_code == 2 and "quantizer.vq.layers.0" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["ls", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 2 and "does not exist" in res.output
