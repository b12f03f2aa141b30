"""Paths stay where the user put them: shard names of an index are plain names inside the folder
(no absolute path, no '..', no link out, strings only), `fix` never writes over an input or
outside --out, and a checkpoint's `vqdoctor.data` path outside its folder is ignored with a note."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from vqdoctor.cli.app import app
from vqdoctor.errors import InputFileError
from vqdoctor.io.checkpoints import load_checkpoint

runner = CliRunner()
K, D = 16, 4


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"quantize.embedding.weight": torch.randn(K, D, generator=g), "encoder.weight": torch.randn(D, 3, generator=g)}


def _sharded(folder: Path, shard_names: tuple[str, str] = ("model-1.safetensors", "model-2.safetensors")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state = _state()
    save_file({"quantize.embedding.weight": state["quantize.embedding.weight"]}, str(folder / "model-1.safetensors"))
    save_file({"encoder.weight": state["encoder.weight"]}, str(folder / "model-2.safetensors"))
    index = {"metadata": {}, "weight_map": {"quantize.embedding.weight": shard_names[0], "encoder.weight": shard_names[1]}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text("{}")
    return folder


def _latents(path: Path) -> Path:
    np.save(path, np.random.default_rng(0).normal(size=(200, D)).astype(np.float32))
    return path


def _one_paragraph(res) -> str:
    assert "Traceback" not in res.output
    return " ".join(res.output.split())


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "link-out", "not-a-string", "backslash", "empty"])
def test_shard_names_must_stay_inside_the_folder(tmp_path, kind):
    victim = tmp_path / "victim.safetensors"
    save_file({"encoder.weight": torch.zeros(D, 3)}, str(victim))
    hf = _sharded(tmp_path / "hf")
    index_path = hf / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    bad = {"absolute": str(victim), "dotdot": "../victim.safetensors", "link-out": "link.safetensors",
           "not-a-string": 7, "backslash": "..\\victim.safetensors", "empty": ""}[kind]
    if kind == "link-out":
        (hf / "link.safetensors").symlink_to(victim)
    index["weight_map"]["encoder.weight"] = bad
    index_path.write_text(json.dumps(index))
    z = _latents(tmp_path / "z.npy")
    before = _snapshot(tmp_path)
    with pytest.raises(InputFileError):
        load_checkpoint(hf)
    for args in (["ls", str(hf)], ["inspect", str(hf)],
                 ["fix", "revive", str(hf), "--latents", str(z), "--out", str(tmp_path / "out")]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        text = _one_paragraph(res)
        assert "model.safetensors.index.json" in text
    assert _snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_links_inside_the_folder_and_the_hub_cache_are_followed(tmp_path):
    hf = _sharded(tmp_path / "hf")
    (hf / "model-2.safetensors").rename(hf / "real-2.safetensors")
    (hf / "model-2.safetensors").symlink_to("real-2.safetensors")
    assert set(load_checkpoint(hf).state) == {"quantize.embedding.weight", "encoder.weight"}
    # huggingface_hub's cache: snapshots/<rev>/FILE -> ../../blobs/<sha>
    repo = tmp_path / "models--org--vq"
    snap = _sharded(repo / "snapshots" / "abc123")
    (repo / "blobs").mkdir()
    for name in ("model-1.safetensors", "model-2.safetensors", "model.safetensors.index.json", "config.json"):
        blob = repo / "blobs" / f"sha-{name}"
        (snap / name).rename(blob)
        (snap / name).symlink_to(Path("../../blobs") / blob.name)
    assert set(load_checkpoint(snap).state) == {"quantize.embedding.weight", "encoder.weight"}
    out = tmp_path / "fixed"
    res = runner.invoke(app, ["fix", "revive", str(snap), "--latents", str(_latents(tmp_path / "z.npy")), "--out", str(out)])
    assert res.exit_code in (0, 2), res.output  # 2 only when nothing needs reviving
    if res.exit_code == 0:
        assert (out / "model-1.safetensors").is_file() and not (out / "model-1.safetensors").is_symlink()


def test_fix_refuses_to_write_over_any_input(tmp_path):
    ckpt = tmp_path / "m.safetensors"
    save_file(_state(), str(ckpt))
    z = tmp_path / "z.safetensors"
    save_file({"z": torch.randn(200, D)}, str(z))
    hard = tmp_path / "hard.safetensors"
    os.link(ckpt, hard)
    soft = tmp_path / "soft.safetensors"
    soft.symlink_to(ckpt)
    before = _snapshot(tmp_path)
    for out in (z, hard, soft, ckpt):
        res = runner.invoke(app, ["fix", "revive", str(ckpt), "--latents", str(z), "--out", str(out)])
        assert res.exit_code == 2, (out, res.output)
        assert "overwrite" in _one_paragraph(res)
    assert _snapshot(tmp_path) == before


def test_fix_refuses_an_output_inside_the_input_folder(tmp_path):
    hf = _sharded(tmp_path / "hf")
    z = _latents(tmp_path / "z.npy")
    before = _snapshot(tmp_path)
    res = runner.invoke(app, ["fix", "revive", str(hf), "--latents", str(z), "--out", str(hf / "inner")])
    assert res.exit_code == 2 and "inside the input folder" in _one_paragraph(res)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["../data.npz", "/etc/passwd", "sub/../../data.npz"])
def test_metadata_data_path_outside_the_folder_is_ignored(tmp_path, where):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    np.savez(tmp_path / "data.npz", x=np.zeros((10, 3), np.float32))
    path = folder / "m.safetensors"
    save_file(_state(), str(path), metadata={"vqdoctor.data": where})
    res = runner.invoke(app, ["inspect", str(path), "--json", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["data"]["vectors"] is None
    assert any("vqdoctor.data" in n and "ignored" in n for n in doc["notes"])
