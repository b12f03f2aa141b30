"""Writing repaired checkpoints: same format, bit-exact elsewhere, atomic, never over the input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vqdoctor.errors import UsageError
from vqdoctor.io import writers
from vqdoctor.io.checkpoints import load_checkpoint
from vqdoctor.io.writers import write_checkpoint


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "encoder.weight": torch.randn(8, 4, generator=g),
        "quantize.embedding.weight": torch.randn(16, 8, generator=g).to(torch.bfloat16),
        "quantize.cluster_size": torch.rand(16, generator=g, dtype=torch.float64),
        "quantize.initted": torch.tensor([True]),
    }


NEW_CODES = torch.full((16, 8), 0.5)  # float32 on purpose: must be cast back to bf16


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def _metadata(path):
    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata()


def test_safetensors_roundtrip_bit_exact(tmp_path):
    src = tmp_path / "in.safetensors"
    save_file(_state(), src, metadata={"arch": "vqgan", "config": '{"k": 16}'})
    before = src.read_bytes()
    ckpt = load_checkpoint(src)
    out = write_checkpoint(ckpt, tmp_path / "out.safetensors",
                           updates={"quantize.embedding.weight": NEW_CODES, "quantize.extra": torch.ones(3)},
                           remove=["quantize.initted"])
    assert src.read_bytes() == before
    written = load_file(out)
    assert set(written) == {"encoder.weight", "quantize.embedding.weight", "quantize.cluster_size",
                            "quantize.extra"}
    assert written["quantize.embedding.weight"].dtype == torch.bfloat16
    assert torch.equal(written["quantize.embedding.weight"], NEW_CODES.to(torch.bfloat16))
    for key in ("encoder.weight", "quantize.cluster_size"):
        assert _same_bits(written[key], _state()[key])
    assert _metadata(out) == {"arch": "vqgan", "config": '{"k": 16}'}
    # the output is itself a valid checkpoint for the next run
    assert load_checkpoint(out).metadata == {"arch": "vqgan", "config": '{"k": 16}'}


def test_pickle_lightning_container_preserved(tmp_path):
    src = tmp_path / "last.ckpt"
    inner = {f"module.{k}": v for k, v in _state().items()}
    extra = {"epoch": 7, "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(3)}}}], "name": "run1"}
    torch.save({"state_dict": inner, **extra}, src)
    ckpt = load_checkpoint(src)
    out = write_checkpoint(ckpt, tmp_path / "fixed.ckpt",
                           updates={"quantize.embedding.weight": NEW_CODES, "quantize.new": torch.zeros(2)})
    obj = torch.load(out, weights_only=True)
    assert set(obj) == {"state_dict", "epoch", "optimizer_states", "name"}
    assert obj["epoch"] == 7 and obj["name"] == "run1"
    assert torch.equal(obj["optimizer_states"][0]["state"][0]["exp_avg"], torch.ones(3))
    sd = obj["state_dict"]
    assert list(sd)[:4] == list(inner)  # order kept, new key after the others
    assert "module.quantize.new" in sd
    assert sd["module.quantize.embedding.weight"].dtype == torch.bfloat16
    for key in ("encoder.weight", "quantize.cluster_size", "quantize.initted"):
        assert _same_bits(sd[f"module.{key}"], _state()[key])


def test_pickle_chosen_ema_nesting_written_back_there(tmp_path):
    src = tmp_path / "train.pt"
    torch.save({"model": _state(), "ema": _state()}, src)
    ckpt = load_checkpoint(src, nesting="ema")
    out = write_checkpoint(ckpt, tmp_path / "out.pt", updates={"quantize.embedding.weight": NEW_CODES})
    obj = torch.load(out, weights_only=True)
    assert torch.equal(obj["ema"]["quantize.embedding.weight"].float(), NEW_CODES)
    assert _same_bits(obj["model"]["quantize.embedding.weight"], _state()["quantize.embedding.weight"])


def test_hf_sharded_rewrites_only_the_affected_shard(tmp_path):
    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "x"}')
    state = _state()
    save_file({"encoder.weight": state["encoder.weight"]}, src / "model-1.safetensors", metadata={"format": "pt"})
    save_file({k: v for k, v in state.items() if k != "encoder.weight"}, src / "model-2.safetensors",
              metadata={"format": "pt"})
    index = {"metadata": {"total_size": 0}, "weight_map": {
        "encoder.weight": "model-1.safetensors",
        **{k: "model-2.safetensors" for k in state if k != "encoder.weight"}}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    ckpt = load_checkpoint(src)
    out = write_checkpoint(ckpt, tmp_path / "fixed",
                           updates={"quantize.embedding.weight": NEW_CODES, "quantize.proj.weight": torch.eye(8)})
    assert (out / "model-1.safetensors").read_bytes() == (src / "model-1.safetensors").read_bytes()
    assert (out / "config.json").read_text() == '{"model_type": "x"}'
    new_index = json.loads((out / "model.safetensors.index.json").read_text())
    assert new_index["weight_map"]["quantize.proj.weight"] == "model-2.safetensors"
    assert new_index["metadata"]["total_size"] == 8 * 8 * 4
    shard = load_file(out / "model-2.safetensors")
    assert shard["quantize.embedding.weight"].dtype == torch.bfloat16
    assert _same_bits(shard["quantize.cluster_size"], state["quantize.cluster_size"])
    assert _metadata(out / "model-2.safetensors") == {"format": "pt"}
    reloaded = load_checkpoint(out)
    assert torch.equal(reloaded.state["quantize.proj.weight"], torch.eye(8))


def test_npz_roundtrip(tmp_path):
    src = tmp_path / "cb.npz"
    codes = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.savez_compressed(src, level0=codes, level1=codes + 1)
    out = write_checkpoint(load_checkpoint(src), tmp_path / "out.npz", updates={"level1": torch.zeros(4, 3)})
    with np.load(out) as npz:
        assert list(npz.keys()) == ["level0", "level1"]
        assert np.array_equal(npz["level0"], codes) and npz["level1"].dtype == np.float64
        assert not npz["level1"].any()


def test_npy_refuses_second_key(tmp_path):
    src = tmp_path / "cb.npy"
    np.save(src, np.zeros((4, 2), dtype=np.float32))
    with pytest.raises(UsageError, match="one array"):
        write_checkpoint(load_checkpoint(src), tmp_path / "o.npy", updates={"other": torch.zeros(1)})
    out = write_checkpoint(load_checkpoint(src), tmp_path / "o.npy", updates={"codebook": torch.ones(4, 2)})
    assert np.load(out).dtype == np.float32 and np.load(out).all()


# --- safety ----------------------------------------------------------------------------------


def test_refuses_to_overwrite_input(tmp_path):
    src = tmp_path / "m.safetensors"
    save_file(_state(), src)
    with pytest.raises(UsageError, match="(?s)Refusing to overwrite the input.*--in-place"):
        write_checkpoint(load_checkpoint(src), src, updates={})


def test_in_place_keeps_numbered_backups(tmp_path):
    src = tmp_path / "m.safetensors"
    save_file(_state(), src)
    original = src.read_bytes()
    write_checkpoint(load_checkpoint(src), src, updates={"quantize.embedding.weight": NEW_CODES}, in_place=True)
    assert (tmp_path / "m.safetensors.bak").read_bytes() == original
    first_fix = src.read_bytes()
    write_checkpoint(load_checkpoint(src), src, updates={"encoder.weight": torch.zeros(8, 4)}, in_place=True)
    assert (tmp_path / "m.safetensors.bak").read_bytes() == original
    assert (tmp_path / "m.safetensors.bak.1").read_bytes() == first_fix
    assert not load_file(src)["encoder.weight"].any()


def test_existing_output_is_replaced(tmp_path):
    src = tmp_path / "m.safetensors"
    save_file(_state(), src)
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"old")
    write_checkpoint(load_checkpoint(src), out, updates={})
    assert set(load_file(out)) == set(_state())


def test_output_must_keep_the_format(tmp_path):
    src = tmp_path / "m.safetensors"
    save_file(_state(), src)
    with pytest.raises(UsageError, match=r"keep the input's format \(.safetensors\)"):
        write_checkpoint(load_checkpoint(src), tmp_path / "o.pt", updates={})


def test_unknown_removed_key(tmp_path):
    src = tmp_path / "m.safetensors"
    save_file(_state(), src)
    with pytest.raises(UsageError, match="'nope'"):
        write_checkpoint(load_checkpoint(src), tmp_path / "o.safetensors", updates={}, remove=["nope"])


def _leftovers(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_failure_mid_write_safetensors_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / "m.safetensors"
    save_file(_state(), src)
    before = src.read_bytes()
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"previous output")
    calls = []

    def boom(fin, fout, start, length):
        calls.append(start)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(fin, fout, start, length)

    real = writers._copy_range
    monkeypatch.setattr(writers, "_copy_range", boom)
    with pytest.raises(UsageError, match="disk full"):  # an OSError while writing is one paragraph
        write_checkpoint(load_checkpoint(src), out, updates={"quantize.embedding.weight": NEW_CODES})
    assert src.read_bytes() == before
    assert out.read_bytes() == b"previous output"
    assert _leftovers(tmp_path, {"m.safetensors", "o.safetensors"}) == []


def test_failure_mid_write_pickle_in_place_keeps_input(tmp_path, monkeypatch):
    src = tmp_path / "m.ckpt"
    torch.save({"state_dict": _state(), "epoch": 1}, src)
    before = src.read_bytes()

    def boom(obj, f, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("killed")

    monkeypatch.setattr(writers.torch, "save", boom)
    with pytest.raises(RuntimeError, match="killed"):
        write_checkpoint(load_checkpoint(src), src, updates={"encoder.weight": torch.zeros(8, 4)}, in_place=True)
    assert src.read_bytes() == before
    assert _leftovers(tmp_path, {"m.ckpt", "m.ckpt.bak"}) == []


def test_failure_mid_write_folder_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / "hf"
    src.mkdir()
    save_file(_state(), src / "model.safetensors")
    monkeypatch.setattr(writers, "_write_safetensors", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(UsageError, match="disk full"):
        write_checkpoint(load_checkpoint(src), tmp_path / "out", updates={"encoder.weight": torch.zeros(8, 4)})
    assert _leftovers(tmp_path, {"hf"}) == []
