"""--model grows up: factory keyword arguments (--model-arg), the key-matching refusals and what
they say, through the core and the CLI runner."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from tests.test_io.test_encoders import CPU, ckpt_of
from vqdoctor.cli.app import app
from vqdoctor.cli.common import parse_model_args, parse_model_value
from vqdoctor.errors import EncoderError, UsageError
from vqdoctor.io.encoders import encoder_from_factory

FACTORY = """
import torch
from torch import nn

class Model(nn.Module):
    def __init__(self, width=8, latent=2, act="relu", bias=True, scale=None):
        super().__init__()
        self.config = dict(width=width, latent=latent, act=act, bias=bias, scale=scale)
        self.encoder = nn.Sequential(nn.Linear(3, width, bias=bias), nn.ReLU() if act == "relu" else nn.Tanh(),
                                     nn.Linear(width, latent))
        self.decoder = nn.Linear(latent, 3)

def build(width: int = 8, latent: int = 2, act: str = "relu", bias: bool = True, scale: float | None = None):
    return Model(width, latent, act, bias, scale)

def wrapped():
    outer = nn.Module()
    outer.net = Model()
    return outer

LAST = {}

def recorded(**kwargs):
    LAST.clear()
    LAST.update(kwargs)
    return Model()
"""

X = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
runner = CliRunner()


@pytest.fixture()
def factory(tmp_path):
    p = tmp_path / "user_model.py"
    p.write_text(textwrap.dedent(FACTORY))
    return p


def _model_state(width=8, latent=2, prefix=""):
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, latent))
    dec = nn.Linear(latent, 3)
    state = {f"{prefix}encoder.{k}": v for k, v in enc.state_dict().items()}
    state |= {f"{prefix}decoder.{k}": v for k, v in dec.state_dict().items()}
    return enc, state


@pytest.mark.parametrize(("raw", "value"), [
    ("64", 64), ("-3", -3), ("0.5", 0.5), ("1e-3", 1e-3), ("true", True), ("False", False), ("none", None),
    ("null", None), ("vqgan", "vqgan"), ("'8'", "8"), ('"true"', "true"), (" spaced ", "spaced"), ("nan", "nan"),
    ("", ""), ("a=b", "a=b"), ("1.2.3", "1.2.3"),
])
def test_model_arg_values_are_typed(raw, value):
    got = parse_model_value(raw)
    assert got == value and type(got) is type(value)


def test_model_args_keep_order_and_refuse_bad_names():
    assert parse_model_args(["b=1", "a=x=y"]) == (("b", 1), ("a", "x=y"))
    for bad, msg in (["noequals"], "is not NAME=VALUE"), (["1x=2"], "is not NAME=VALUE"), (["class=2"], "NAME=VALUE"), \
            (["a=1", "a=2"], "given twice"):
        with pytest.raises(UsageError, match=msg):
            parse_model_args(bad)


def test_factory_gets_the_keyword_arguments(tmp_path, factory):
    enc, state = _model_state(width=16, latent=4)
    ckpt = ckpt_of(state, tmp_path / "m.safetensors")
    built = encoder_from_factory(f"{factory}:build", ckpt, method=None, device=CPU,
                                 kwargs={"width": 16, "latent": 4, "act": "relu", "bias": True, "scale": None})
    torch.testing.assert_close(built.fn(X), enc(X))
    assert "the factory was called with width=16 (int), latent=4 (int), act='relu' (str), bias=True (bool), " \
           "scale=None (NoneType)" in built.notes


def test_a_factory_argument_it_does_not_take_shows_the_values_and_its_parameters(tmp_path, factory):
    _, state = _model_state()
    with pytest.raises(EncoderError, match=r"with depth=3 \(int\): the factory raised TypeError: .*depth") as err:
        encoder_from_factory(f"{factory}:build", ckpt_of(state, tmp_path / "m.st"), method=None, device=CPU,
                             kwargs={"depth": 3})
    assert "width: int = 8" in err.value.hint and "--model-arg NAME=VALUE" in err.value.hint


def test_sizes_that_do_not_fit_suggest_model_args(tmp_path, factory):
    _, state = _model_state(width=16)
    with pytest.raises(EncoderError, match=r"3 checkpoint tensor\(s\) do not fit the model's shapes, e.g. 'encoder.0.bias': checkpoint \(16,\) vs model \(8,\)") as err:
        encoder_from_factory(f"{factory}:build", ckpt_of(state, tmp_path / "m.st"), method=None, device=CPU)
    assert "--model-arg" in err.value.hint


def test_a_checkpoint_prefix_is_named_with_what_to_do(tmp_path, factory):
    _, state = _model_state(prefix="vqvae.")
    with pytest.raises(EncoderError, match=r"none of the checkpoint's 6 tensors matches") as err:
        encoder_from_factory(f"{factory}:build", ckpt_of(state, tmp_path / "m.st"), method=None, device=CPU)
    assert "'vqvae.encoder.0.weight'" in err.value.message and "'encoder.0.weight'" in err.value.message
    assert "prefix 'vqvae.' the model's lack (6 of the model's 6 keys match" in err.value.hint
    assert "attribute 'vqvae'" in err.value.hint


def test_a_model_prefix_is_named_with_what_to_do(tmp_path, factory):
    _, state = _model_state()
    with pytest.raises(EncoderError) as err:
        encoder_from_factory(f"{factory}:wrapped", ckpt_of(state, tmp_path / "m.st"), method="net", device=CPU)
    assert "prefix 'net.' the checkpoint's lack" in err.value.hint and "return model.net" in err.value.hint


def test_encoder_tensors_missing_from_the_checkpoint_are_refused(tmp_path, factory):
    """A checkpoint holding the decoder only would leave the encoder random: refused, not a note."""
    _, state = _model_state()
    decoder_only = {k: v for k, v in state.items() if k.startswith("decoder.")}
    with pytest.raises(EncoderError, match=r"match 2 of the model's 6 keys; 4 tensors of the encode path \(encoder\) "
                                           r"would keep the weights they were built with: 'encoder.0.bias'"):
        encoder_from_factory(f"{factory}:build", ckpt_of(decoder_only, tmp_path / "m.st"), method=None, device=CPU)
    encoder_only = {k: v for k, v in state.items() if k.startswith("encoder.")}  # a missing decoder is only a note
    built = encoder_from_factory(f"{factory}:build", ckpt_of(encoder_only, tmp_path / "m.st"), method=None, device=CPU)
    assert any("2 model keys missing from the checkpoint" in n for n in built.notes)
    assert "loaded 4 tensors from the checkpoint (of the model's 6)" in built.notes


# -------------------------------------------------------------------------------------------- CLI


def _cli_case(tmp_path, width=16):
    enc, state = _model_state(width=width, latent=4)
    state["quantize.embedding.weight"] = torch.randn(16, 4, generator=torch.Generator().manual_seed(2))
    save_file(state, str(tmp_path / "m.safetensors"))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32))
    return enc


def _inspect(tmp_path, factory, *extra):
    return runner.invoke(app, ["inspect", str(tmp_path / "m.safetensors"), "--inputs", str(tmp_path / "x.npy"),
                               "--model", f"{factory}:build", "--json", "-", "--projection", "none", *extra])


def test_cli_model_args_reach_the_factory(tmp_path, factory):
    _cli_case(tmp_path)
    res = _inspect(tmp_path, factory, "--model-arg", "width=16", "--model-arg", "latent=4", "--model-arg", "act=relu")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["data"]["vectors"] == 64
    notes = " ".join(doc["notes"]) if isinstance(doc.get("notes"), list) else json.dumps(doc)
    assert "width=16 (int), latent=4 (int), act='relu' (str)" in notes


def test_cli_without_the_sizes_says_what_to_pass(tmp_path, factory):
    _cli_case(tmp_path)
    res = _inspect(tmp_path, factory)
    flat = " ".join(res.output.split())
    assert res.exit_code == 2 and "do not fit the model's shapes" in flat and "--model-arg NAME=VALUE" in flat
    res = _inspect(tmp_path, factory, "--model-arg", "width=16", "--model-arg", "depth=2")
    flat = " ".join(res.output.split())
    assert res.exit_code == 2 and "with width=16 (int), depth=2 (int)" in flat and "Traceback" not in flat


def test_cli_model_arg_needs_model_and_a_name(tmp_path, factory):
    _cli_case(tmp_path)
    res = runner.invoke(app, ["inspect", str(tmp_path / "m.safetensors"), "--latents", str(tmp_path / "x.npy"),
                              "--model-arg", "width=16"])
    assert res.exit_code == 2 and "without --model" in res.output
    res = _inspect(tmp_path, factory, "--model-arg", "16")
    assert res.exit_code == 2 and "is not NAME=VALUE" in res.output
