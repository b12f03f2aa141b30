"""Loading checkpoints: formats, nestings, safe pickles, bad inputs."""

from __future__ import annotations

import argparse
import hashlib
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vqdoctor.errors import InputFileError, UnsafePickleError
from vqdoctor.io.checkpoints import fingerprint, load_checkpoint


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "encoder.weight": torch.randn(8, 4, generator=g),
        "quantize.embedding.weight": torch.randn(16, 8, generator=g).to(torch.bfloat16),
        "quantize.initted": torch.tensor([True]),
    }


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {EVIL_MARKER}",))


EVIL_MARKER = "/nonexistent"


# --- formats ---------------------------------------------------------------------------------


def test_safetensors_lazy_with_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file(_state(), path, metadata={"arch": "vqgan"})
    ckpt = load_checkpoint(path)
    assert ckpt.format == "safetensors"
    assert ckpt.metadata == {"arch": "vqgan"}
    assert ckpt.state.shape("quantize.embedding.weight") == (16, 8)
    assert ckpt.state.dtype("quantize.embedding.weight") == torch.bfloat16
    assert ckpt.state._cache == {}  # nothing read yet: shapes come from the header
    assert torch.equal(ckpt.state["quantize.embedding.weight"], _state()["quantize.embedding.weight"])
    assert list(ckpt.state._cache) == ["quantize.embedding.weight"]
    assert ckpt.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()


def test_lightning_pickle_strips_prefix_and_keeps_key_map(tmp_path):
    path = tmp_path / "last.ckpt"
    inner = {f"module.{k}": v for k, v in _state().items()}
    torch.save({"state_dict": inner, "epoch": 3, "optimizer_states": [{"state": {}}]}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.format == "pickle"
    assert set(ckpt.state) == set(_state())
    assert ckpt.nesting == ("state_dict", "strip prefix 'module.'")
    assert ckpt.container == ("state_dict",) and ckpt.prefix == "module."
    assert ckpt.key_map["encoder.weight"] == "module.encoder.weight"
    assert torch.equal(ckpt.state["encoder.weight"], _state()["encoder.weight"])


def test_stacked_prefixes_are_stripped(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({f"module._orig_mod.{k}": v for k, v in _state().items()}, path)
    ckpt = load_checkpoint(path)
    assert set(ckpt.state) == set(_state())
    assert ckpt.nesting == ("strip prefix 'module.'", "strip prefix '_orig_mod.'")


def test_prefix_kept_when_not_every_key_has_it(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"model.a": torch.zeros(2), "head.b": torch.zeros(2)}, path)
    assert set(load_checkpoint(path).state) == {"model.a", "head.b"}


def test_main_weights_preferred_over_ema_and_choosable(tmp_path):
    path = tmp_path / "train.pt"
    torch.save({"ema": _state(1), "model": _state(0), "step": 10}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.container == ("model",)
    assert ckpt.alternatives == ("ema",)
    assert any("also found: ema" in note for note in ckpt.nesting)
    assert torch.equal(ckpt.state["encoder.weight"], _state(0)["encoder.weight"])
    ema = load_checkpoint(path, nesting="ema")
    assert ema.container == ("ema",)
    assert torch.equal(ema.state["encoder.weight"], _state(1)["encoder.weight"])
    with pytest.raises(InputFileError, match="no state dict at nesting 'opt'.*ema.*model"):
        load_checkpoint(path, nesting="opt")


def test_deeper_nesting(tmp_path):
    path = tmp_path / "train.pt"
    torch.save({"best_state": {"model": _state()}, "xp.cfg": "yaml text"}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.container == ("best_state", "model")
    assert set(ckpt.state) == set(_state())


def test_legacy_pickle_format(tmp_path):
    path = tmp_path / "old.pth"
    torch.save(_state(), path, _use_new_zipfile_serialization=False)
    assert set(load_checkpoint(path).state) == set(_state())


def test_hf_folder_single(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "chameleon"}')
    save_file({f"model.{k}": v for k, v in _state().items()} | {"lm_head.weight": torch.zeros(2, 2)},
              folder / "model.safetensors", metadata={"format": "pt"})
    ckpt = load_checkpoint(folder)
    assert ckpt.format == "hf-folder"
    assert json.loads(ckpt.metadata["config"]) == {"model_type": "chameleon"}
    assert ckpt.metadata["format"] == "pt"
    assert "model.quantize.embedding.weight" in ckpt.state
    assert ckpt.files["lm_head.weight"] == "model.safetensors"


def _sharded(folder, *, bin_format=False):
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    state = _state()
    shards = {"a": {"encoder.weight": state["encoder.weight"]},
              "b": {k: v for k, v in state.items() if k != "encoder.weight"}}
    weight_map = {}
    for name, part in shards.items():
        if bin_format:
            file = f"pytorch_model-{name}.bin"
            torch.save(part, folder / file)
        else:
            file = f"model-{name}.safetensors"
            save_file(part, folder / file)
        weight_map |= {k: file for k in part}
    index = "pytorch_model.bin.index.json" if bin_format else "model.safetensors.index.json"
    (folder / index).write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    return state


@pytest.mark.parametrize("bin_format", [False, True])
def test_hf_sharded(tmp_path, bin_format):
    state = _sharded(tmp_path / "hf", bin_format=bin_format)
    ckpt = load_checkpoint(tmp_path / "hf")
    assert ckpt.format == "hf-sharded"
    assert set(ckpt.state) == set(state)
    for key, value in state.items():
        assert torch.equal(ckpt.state[key], value)
    suffix = ".bin" if bin_format else ".safetensors"
    assert ckpt.files["encoder.weight"] == f"{'pytorch_model' if bin_format else 'model'}-a{suffix}"


def test_hf_legacy_bin(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    torch.save(_state(), folder / "pytorch_model.bin")
    assert load_checkpoint(folder).format == "hf-folder"


def test_numpy_codebooks(tmp_path):
    codes = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    np.save(tmp_path / "cb.npy", codes)
    ckpt = load_checkpoint(tmp_path / "cb.npy")
    assert list(ckpt.state) == ["codebook"] and ckpt.state.shape("codebook") == (32, 4)
    assert np.array_equal(ckpt.state["codebook"].numpy(), codes)
    np.savez(tmp_path / "cb.npz", level0=codes, level1=codes[:8].astype(np.float16))
    ckpt = load_checkpoint(tmp_path / "cb.npz")
    assert ckpt.state.shape("level1") == (8, 4) and ckpt.state.dtype("level1") == torch.float16
    assert ckpt.state._cache == {}
    assert np.array_equal(ckpt.state["level0"].numpy(), codes)


def test_folder_fingerprint_covers_every_file(tmp_path):
    _sharded(tmp_path / "hf")
    before = fingerprint(tmp_path / "hf")
    assert load_checkpoint(tmp_path / "hf").fingerprint == before
    (tmp_path / "hf" / "config.json").write_text('{"x": 1}')
    assert fingerprint(tmp_path / "hf") != before


# --- safe pickles ----------------------------------------------------------------------------


def test_pickle_with_namespace_refused_then_allowed(tmp_path):
    path = tmp_path / "train.pt"
    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": _state()}, path)
    with pytest.raises(UnsafePickleError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert "argparse.Namespace" in text and "--allow-global argparse.Namespace" in text
    ckpt = load_checkpoint(path, allow_globals=["argparse.Namespace"])
    assert set(ckpt.state) == set(_state())
    assert ckpt.allow_globals == ("argparse.Namespace",)


def test_legacy_pickle_with_namespace_names_the_global(tmp_path):
    path = tmp_path / "train.pt"
    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": _state()}, path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafePickleError, match="argparse.Namespace"):
        load_checkpoint(path)


def test_code_in_pickle_is_never_run(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setattr(__import__(__name__), "EVIL_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _state(), "payload": Evil()}, path)
    with pytest.raises(UnsafePickleError, match="system"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name, message",
    [("os.system", "not on vqdoctor's allow-list"), ("builtins.eval", "not on vqdoctor's allow-list"),
     ("subprocess.Popen", "not on vqdoctor's allow-list"), ("no_such_module.Thing", "not on vqdoctor's allow-list"),
     ("Namespace", "not on vqdoctor's allow-list")],
)
def test_dangerous_or_bad_allow_globals_refused(tmp_path, name, message):
    path = tmp_path / "m.pt"
    torch.save(_state(), path)
    with pytest.raises(UnsafePickleError, match=message):
        load_checkpoint(path, allow_globals=[name])


# --- bad input -------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_folder_without_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputFileError, match="without a recognised model.*notes.txt"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("name", ["m.safetensors", "m.pt", "m.npz"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(InputFileError, match="empty"):
        load_checkpoint(tmp_path / name)


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file(_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(InputFileError, match="truncated"):
        load_checkpoint(path)
    path.write_bytes(data[:20])
    with pytest.raises(InputFileError, match="truncated"):
        load_checkpoint(path)


def test_truncated_zip_pickle(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(_state(), path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputFileError, match=str(path)):
        load_checkpoint(path)


def test_text_file_named_pt(tmp_path):
    path = tmp_path / "m.pt"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(InputFileError, match="could not be read"):
        load_checkpoint(path)


def test_unknown_extension_lists_supported(tmp_path):
    path = tmp_path / "m.h5"
    path.write_bytes(b"x")
    with pytest.raises(InputFileError) as info:
        load_checkpoint(path)
    assert "'.h5'" in str(info.value) and ".safetensors" in str(info.value) and ".ckpt" in str(info.value)


def test_pickle_without_tensors(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(InputFileError, match="no tensors"):
        load_checkpoint(path)


def test_npz_with_strings_only(tmp_path):
    np.savez(tmp_path / "m.npz", names=np.array(["a", "b"]))
    with pytest.raises(InputFileError, match="not a numeric codebook"):
        load_checkpoint(tmp_path / "m.npz")
