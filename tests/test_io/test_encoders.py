"""Encoder sources: checkpoint metadata, user factories, TorchScript and torch.export files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from vqdoctor.errors import EncoderError, InputFileError
from vqdoctor.io.checkpoint_types import Checkpoint
from vqdoctor.io.encoders import (
    data_from_metadata,
    encoder_from_factory,
    encoder_from_file,
    encoder_from_metadata,
)
from vqdoctor.io.store import TensorStore
from vqdoctor.samples import sample_path

CPU = torch.device("cpu")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        self.decoder = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def ckpt_of(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> Checkpoint:
    return Checkpoint(path=path, format="safetensors", state=TensorStore.from_dict(tensors), metadata=metadata or {})


def sample_ckpt(name: str) -> Checkpoint:
    path = sample_path(name)
    with safe_open(str(path), framework="pt") as f:
        return ckpt_of({k: f.get_tensor(k) for k in f.keys()}, path, dict(f.metadata()))


@pytest.fixture()
def tiny() -> Tiny:
    torch.manual_seed(0)
    return Tiny().eval()


X = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("name", ["vanilla_tokens_collapse", "large_codebook_simvq", "residual_vq"])
def test_metadata_encoder_reproduces_training_script_latents(name):
    ckpt = sample_ckpt(name)
    enc = encoder_from_metadata(ckpt, device=CPU)
    assert enc is not None and enc.channel_axis == -1
    data = data_from_metadata(ckpt)
    assert data is not None and data.is_file()
    with np.load(data) as d:
        x = torch.from_numpy(d["x"])
    z = enc.fn(x)
    measured = json.loads(ckpt.metadata["vqdoctor.measured"])
    np.testing.assert_allclose(z[:3].numpy(), measured["latent_head"], atol=1e-5)
    np.testing.assert_allclose(z.mean(0).numpy(), measured["latent_mean"], atol=1e-5)
    np.testing.assert_allclose(z.std(0).numpy(), measured["latent_std"], atol=1e-5)


def test_metadata_absent_gives_none(tiny, tmp_path):
    assert encoder_from_metadata(ckpt_of(tiny.state_dict(), tmp_path / "m.safetensors"), device=CPU) is None
    assert data_from_metadata(ckpt_of(tiny.state_dict(), tmp_path / "m.safetensors")) is None


def test_metadata_key_mismatch_is_encoder_error(tmp_path):
    ckpt = sample_ckpt("vanilla_tokens_collapse")
    state = {k: v for k, v in ckpt.state.items() if k != "encoder.2.bias"}
    state["encoder.9.weight"] = torch.zeros(1)
    bad = ckpt_of(state, tmp_path / "x.safetensors", ckpt.metadata)
    with pytest.raises(EncoderError, match=r"missing 'encoder.2.bias'; unexpected 'encoder.9.weight'"):
        encoder_from_metadata(bad, device=CPU)


def test_metadata_bad_arch_is_encoder_error(tmp_path):
    ckpt = sample_ckpt("vanilla_tokens_collapse")
    for arch, msg in [("{nope", "not valid JSON"), ('{"family": "convnet"}', "family 'convnet'")]:
        bad = ckpt_of(dict(ckpt.state.items()), tmp_path / "x.safetensors", {"vqdoctor.arch": arch})
        with pytest.raises(EncoderError, match=msg):
            encoder_from_metadata(bad, device=CPU)


def test_data_path_missing_names_the_path(tmp_path):
    ckpt = ckpt_of({"a": torch.zeros(1)}, tmp_path / "m.safetensors", {"vqdoctor.data": "gone.npz"})
    with pytest.raises(InputFileError, match="'gone.npz'"):
        data_from_metadata(ckpt)


# -------------------------------------------------------------------------------------- factory


FACTORY = """
import torch
from torch import nn

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        self.decoder = nn.Linear(2, 3)
        self.extra = nn.Linear(1, 1)

    def encode(self, x):
        return self.encoder(x), "aux"

    def as_dict(self, x):
        return {"other": x, "latents": self.encoder(x)}

def make():
    return Model()

def not_a_module():
    return 3
"""


@pytest.fixture()
def factory_file(tmp_path) -> Path:
    p = tmp_path / "user_model.py"
    p.write_text(textwrap.dedent(FACTORY))
    return p


def test_factory_from_file_loads_weights_and_reports_keys(tiny, tmp_path, factory_file):
    state = dict(tiny.state_dict())
    state["quantizer._codebook.embed"] = torch.zeros(1, 4, 2)
    ckpt = ckpt_of(state, tmp_path / "m.safetensors")
    enc = encoder_from_factory(f"{factory_file}:make", ckpt, method=None, device=CPU)
    torch.testing.assert_close(enc.fn(X), tiny.encoder(X))
    notes = " | ".join(enc.notes)
    assert "loaded 6 tensors" in notes
    assert "2 model keys missing" in notes and "'extra.weight'" in notes
    assert "1 checkpoint keys not in the model" in notes and "quantizer._codebook.embed" in notes
    assert "first tensor" in notes  # encode returns a tuple: the rule is stated
    enc2 = encoder_from_factory(f"{factory_file}:make", ckpt, method="as_dict", device=CPU)
    torch.testing.assert_close(enc2.fn(X), tiny.encoder(X))
    enc3 = encoder_from_factory(f"{factory_file}:make", ckpt, method="encoder", device=CPU)
    torch.testing.assert_close(enc3.fn(X), tiny.encoder(X))


def test_factory_from_module_path(tiny, tmp_path, factory_file, monkeypatch):
    monkeypatch.syspath_prepend(str(factory_file.parent))
    ckpt = ckpt_of(dict(tiny.state_dict()), tmp_path / "m.safetensors")
    enc = encoder_from_factory("user_model:make", ckpt, method=None, device=CPU)
    torch.testing.assert_close(enc.fn(X), tiny.encoder(X))


@pytest.mark.parametrize(
    "spec, msg",
    [
        ("no_colon", "expected 'package.module:factory'"),
        ("definitely_missing_mod_xyz:make", "cannot import module"),
        ("missing/file.py:make", "does not exist"),
        ("{file}:nothing_here", "no callable 'nothing_here'"),
        ("{file}:not_a_module", "not a torch nn.Module"),
    ],
)
def test_factory_bad_specs(tiny, tmp_path, factory_file, spec, msg):
    ckpt = ckpt_of(dict(tiny.state_dict()), tmp_path / "m.safetensors")
    with pytest.raises(EncoderError, match=msg):
        encoder_from_factory(spec.format(file=factory_file), ckpt, method=None, device=CPU)


def test_factory_bad_method_and_no_matching_keys(tiny, tmp_path, factory_file):
    ckpt = ckpt_of(dict(tiny.state_dict()), tmp_path / "m.safetensors")
    with pytest.raises(EncoderError, match="no method or submodule 'nope'"):
        encoder_from_factory(f"{factory_file}:make", ckpt, method="nope", device=CPU)
    other = ckpt_of({"foo.weight": torch.zeros(2)}, tmp_path / "m.safetensors")
    with pytest.raises(EncoderError, match="none of the checkpoint's 1 tensors"):
        encoder_from_factory(f"{factory_file}:make", other, method=None, device=CPU)


# ----------------------------------------------------------------------------------------- files


def test_torchscript_file(tiny, tmp_path):
    p = tmp_path / "enc.pt"
    torch.jit.save(torch.jit.script(tiny.encoder), str(p))
    enc = encoder_from_file(p, device=CPU)
    assert "TorchScript" in enc.description
    torch.testing.assert_close(enc.fn(X), tiny.encoder(X))


def test_torch_export_file(tiny, tmp_path):
    p = tmp_path / "enc.pt2"
    torch.export.save(torch.export.export(tiny.encoder, (X,)), str(p))
    enc = encoder_from_file(p, device=CPU)
    assert "torch.export" in enc.description
    torch.testing.assert_close(enc.fn(X), tiny.encoder(X))


def test_bad_encoder_files(tiny, tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        encoder_from_file(tmp_path / "none.pt", device=CPU)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    with pytest.raises(InputFileError, match="neither a TorchScript file nor a torch.export program"):
        encoder_from_file(junk, device=CPU)
    pickled = tmp_path / "model.pt"
    torch.save(tiny, str(pickled))  # a full-module pickle: refused, never unpickled
    with pytest.raises(InputFileError, match="refused"):
        encoder_from_file(pickled, device=CPU)
