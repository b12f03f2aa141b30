"""Planted embeddings collapse found end to end through every way of getting latents:
--latents, --model (a user's factory), TorchScript and torch.export encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from vqdoctor.cli.app import app

runner = CliRunner()
FACTORY = '''
import torch
from torch import nn

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 6, bias=False)

def build():
    return Model()
'''


def _selection(dropped: tuple[int, ...]) -> torch.Tensor:
    """(6, 8) encoder weight keeping 6 of the 8 input coordinates."""
    keep = [i for i in range(8) if i not in dropped][:6]
    w = torch.zeros(6, 8)
    w[torch.arange(6), torch.tensor(keep)] = 1.0
    return w


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Ten modes in 8-D; modes 1 and 3 differ from 0 and 2 only along axes 0 and 1. An encoder
    that drops axes 0 and 1 merges (0,1) and (2,3); one that drops axes 6 and 7 keeps all apart."""
    root = tmp_path_factory.mktemp("planted")
    g = np.random.default_rng(0)
    centres = g.uniform(-12, 12, (10, 8)).astype(np.float32)
    centres[:, :2] = g.uniform(-12, 12, (10, 2))
    centres[:, 6:] = 0.0  # axes 6 and 7 carry nothing: dropping them loses no separation
    centres[1, 2:] = centres[0, 2:]
    centres[3, 2:] = centres[2, 2:]
    y = np.repeat(np.arange(10), 200)
    x = (centres[y] + 0.3 * g.standard_normal((len(y), 8))).astype(np.float32)
    np.savez(root / "data.npz", x=x, y=y)
    (root / "encmod.py").write_text(FACTORY)
    models = {}
    for name, dropped in (("merging", (0, 1)), ("faithful", (6, 7))):
        w = _selection(dropped)
        z = torch.from_numpy(x) @ w.T
        codes = z[torch.from_numpy(g.choice(len(z), 64, replace=False))]
        path = root / f"{name}.safetensors"
        save_file({"encoder.weight": w, "quantize.embedding.weight": codes.contiguous()}, str(path))
        lin = torch.nn.Linear(8, 6, bias=False)
        lin.weight.data.copy_(w)
        torch.jit.save(torch.jit.script(lin), str(root / f"{name}.ts"))
        batch = torch.export.Dim("batch")
        program = torch.export.export(lin, (torch.zeros(4, 8),), dynamic_shapes={"input": {0: batch}})
        torch.export.save(program, str(root / f"{name}.pt2"))
        torch.export.save(torch.export.export(lin, (torch.zeros(7, 8),)), str(root / f"{name}-static.pt2"))
        narrow = torch.nn.Linear(5, 6, bias=False)  # takes 5 features, the data has 8: fails
        torch.export.save(torch.export.export(narrow, (torch.zeros(4, 5),), dynamic_shapes={"input": {0: batch}}),
                          str(root / f"{name}-narrow.pt2"))
        np.save(root / f"{name}-latents.npy", z.numpy())
        models[name] = path
    return root, models


def _merged(root, *args) -> list[tuple[int, int]]:
    res = runner.invoke(app, ["inspect", *map(str, args), "--json", "-", "--projection", "none"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    return [(p["a"], p["b"]) for p in doc["embeddings_collapse"]["merged_pairs"]]


@pytest.mark.parametrize("how", ["model", "torchscript", "export"])
def test_merging_encoder_is_caught_through_every_encoder_route(planted, how):
    root, models = planted
    enc = {"model": ["--model", f"{root / 'encmod.py'}:build"], "torchscript": ["--encoder", root / "merging.ts"],
           "export": ["--encoder", root / "merging.pt2"]}[how]
    assert _merged(root, models["merging"], "--inputs", root / "data.npz", *enc) == [(0, 1), (2, 3)]


def test_faithful_encoder_merges_nothing(planted):
    root, models = planted
    assert _merged(root, models["faithful"], "--inputs", root / "data.npz", "--model", f"{root / 'encmod.py'}:build") == []


def test_latents_with_labels_only_measure_the_latent_side_without_merged_pairs(planted):
    root, models = planted
    np.save(root / "y.npy", np.load(root / "data.npz")["y"])
    res = runner.invoke(app, ["inspect", str(models["merging"]), "--latents", str(root / "merging-latents.npy"),
                              "--labels", str(root / "y.npy"), "--json", "-", "--projection", "none"])
    assert res.exit_code == 0, res.output
    ec = json.loads(res.stdout)["embeddings_collapse"]
    assert ec["input_knn_purity"] is None and ec["input_modes"] is None
    # no inputs: nothing says the overlapping modes were ever apart, so no pair is called merged (docs/ci.md)
    assert ec["merged_pairs"] == [] and ec["latent_knn_purity"] < 0.9
    assert "merged_pairs" not in {v["check"] for v in json.loads(res.stdout)["verdicts"]}


def test_an_export_with_a_static_batch_runs_at_that_batch(planted):
    # exported with batch 7: the data (not a multiple of 7) runs 7 at a time, the last batch padded
    root, models = planted
    enc = ["--encoder", root / "merging-static.pt2"]
    assert _merged(root, models["merging"], "--inputs", root / "data.npz", *enc) == [(0, 1), (2, 3)]
    dynamic = json.loads(runner.invoke(app, ["inspect", str(models["merging"]), "--inputs", str(root / "data.npz"),
                                             "--encoder", str(root / "merging.pt2"), "--json", "-", "--projection", "none"]).stdout)
    static = json.loads(runner.invoke(app, ["inspect", str(models["merging"]), "--inputs", str(root / "data.npz"),
                                            *map(str, enc), "--json", "-", "--projection", "none"]).stdout)
    assert static["data"]["vectors"] == dynamic["data"]["vectors"]  # padding dropped
    su, du = static["codebooks"][0]["usage"], dynamic["codebooks"][0]["usage"]
    assert (su["used_codes"], su["perplexity"]) == (du["used_codes"], du["perplexity"])
    assert any("static batch of 7" in n for n in static["notes"])


def test_an_encoder_that_fails_is_one_paragraph_naming_the_batch_shape(planted):
    root, models = planted
    res = runner.invoke(app, ["inspect", str(models["merging"]), "--inputs", str(root / "data.npz"),
                              "--encoder", str(root / "merging-narrow.pt2")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "failed on a batch of shape (2000, 8)" in res.output and "torch.export.Dim" in res.output


CONV_FACTORY = '''
import torch
from torch import nn

class Tokenizer(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv2d(3, 4, kernel_size=2, stride=2)

def build():
    return Tokenizer()
'''


def test_image_folder_through_a_conv_encoder(tmp_path):
    """Images (class = sub-folder) resized, encoded to B x d x H x W, one vector per position."""
    from matplotlib.image import imsave

    g = np.random.default_rng(0)
    colours = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.9, 0.1), "blue": (0.1, 0.1, 0.9)}
    for name, rgb in colours.items():
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(6):
            img = np.clip(np.array(rgb) + 0.05 * g.standard_normal((12, 12, 3)), 0, 1)
            imsave(tmp_path / "imgs" / name / f"{i}.png", img)
    (tmp_path / "tok.py").write_text(CONV_FACTORY)
    conv = torch.nn.Conv2d(3, 4, kernel_size=2, stride=2)
    state = {f"encoder.{k}": v for k, v in conv.state_dict().items()}
    state["quantize.embedding.weight"] = torch.randn(16, 4)
    save_file(state, str(tmp_path / "tok.safetensors"))
    res = runner.invoke(app, ["inspect", str(tmp_path / "tok.safetensors"), "--inputs", str(tmp_path / "imgs"),
                              "--image-size", "8", "--model", f"{tmp_path / 'tok.py'}:build", "--channel-axis", "1",
                              "--json", "-", "--projection", "none"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["data"]["vectors"] == 18 * 4 * 4  # 18 images of 8x8 -> 4x4 positions each
    assert doc["data"]["mode_source"] == "labels"
    tc = doc["codebooks"][0]["tokens_collapse"]
    assert sorted(m["label"] for m in tc["per_mode"]) == ["blue", "green", "red"]


CODEC_FACTORY = '''
import torch
from torch import nn

class Codec(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv1d(1, 8, kernel_size=40, stride=40)

def build():
    return Codec()
'''


def test_audio_folder_through_a_codec_encoder(tmp_path):
    """WAV clips (class = sub-folder) -> a Conv1d encoder -> B x d x T' frames, one vector each."""
    import wave

    g = np.random.default_rng(0)
    for name, freq in (("low", 200.0), ("mid", 800.0), ("high", 3000.0)):
        (tmp_path / "clips" / name).mkdir(parents=True)
        for i in range(5):
            t = np.arange(1600) / 16000
            x = 0.5 * np.sin(2 * np.pi * freq * t + g.uniform(0, 6.28)) + 0.01 * g.standard_normal(1600)
            with wave.open(str(tmp_path / "clips" / name / f"{i}.wav"), "wb") as w:
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
                w.writeframes(np.round(x * 32767).astype("<i2").tobytes())
    (tmp_path / "codec.py").write_text(CODEC_FACTORY)
    conv = torch.nn.Conv1d(1, 8, kernel_size=40, stride=40)
    state = {f"encoder.{k}": v for k, v in conv.state_dict().items()}
    for lvl in range(2):  # an encodec-style residual stack
        p = f"quantizer.vq.layers.{lvl}._codebook"
        state |= {f"{p}.embed": torch.randn(32, 8), f"{p}.cluster_size": torch.ones(32),
                  f"{p}.embed_avg": torch.randn(32, 8), f"{p}.inited": torch.tensor([1.0])}
    save_file(state, str(tmp_path / "codec.safetensors"))
    res = runner.invoke(app, ["inspect", str(tmp_path / "codec.safetensors"), "--inputs", str(tmp_path / "clips"),
                              "--clip-seconds", "0.1", "--model", f"{tmp_path / 'codec.py'}:build",
                              "--channel-axis", "1", "--json", "-", "--projection", "none"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["data"]["vectors"] == 15 * 40  # 15 clips of 1,600 samples -> 40 frames each
    assert [cb["level"] for cb in doc["codebooks"]] == [0, 1]
    assert sorted(m["label"] for m in doc["codebooks"][0]["tokens_collapse"]["per_mode"]) == ["high", "low", "mid"]
