"""The adapters' preprocessing and matching, and the message without transformers (no
transformers needed for any of these)."""

from __future__ import annotations

import json
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from vqdoctor.adapters import ADAPTERS, find_adapter
from vqdoctor.adapters.preprocess import mix_channels, resample, resize_center_crop, scale_pixels, source_rate
from vqdoctor.cli.app import app

runner = CliRunner()


def test_resize_center_crop_keeps_the_centre_of_the_shortest_side():
    x = torch.zeros(1, 3, 40, 80)
    x[..., 20:60] = 1.0  # the centre 40 columns are white, the sides black
    out = resize_center_crop(x, 20)
    assert out.shape == (1, 3, 20, 20)
    assert float(out.min()) > 0.9 and float(out[..., 2:-2].min()) > 0.99  # the white centre (edges: bicubic)


def test_pixel_scaling_and_channel_mixing():
    x = torch.tensor([0.0, 0.5, 1.0])
    assert scale_pixels(x, (-1.0, 1.0)).tolist() == [-1.0, 0.0, 1.0]
    stereo = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert mix_channels(stereo, 1).tolist() == [[[0.5, 0.5]]]
    assert mix_channels(torch.ones(1, 1, 3), 2).shape == (1, 2, 3)


def test_resample_is_scipys_polyphase_filter():
    from scipy.signal import resample_poly

    t = np.arange(16000) / 16000
    x = np.sin(2 * np.pi * 440 * t)[None, None, :]
    out = resample(torch.from_numpy(x).float(), 16000, 24000)
    assert out.shape == (1, 1, 24000)
    np.testing.assert_allclose(out.numpy(), resample_poly(x, 3, 2, axis=-1), atol=1e-5)
    spectrum = np.abs(np.fft.rfft(out[0, 0].numpy()))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1  # one second at 24 kHz: the tone stays at 440 Hz


def test_source_rate_reads_the_first_clip(tmp_path):
    (tmp_path / "a").mkdir()
    with wave.open(str(tmp_path / "a" / "x.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(b"\0\0" * 100)
    assert source_rate(tmp_path) == 22050
    assert source_rate(None) is None and source_rate(tmp_path / "a" / "x.wav") is None


@pytest.mark.parametrize("config, name", [
    ({"model_type": "chameleon_vqgan"}, "chameleon"),
    ({"model_type": "chameleon", "vq_config": {"model_type": "chameleon_vqgan"}}, "chameleon"),
    ({"model_type": "janus", "vq_config": {}}, "janus"),
    ({"architectures": ["Emu3VQVAE"]}, "emu3"),
    ({"model_type": "emu3", "vq_config": {}}, "emu3"),
    ({"model_type": "encodec"}, "encodec"),
    ({"model_type": "mimi"}, "mimi"),
    ({"model_type": "dac"}, "dac"),
    ({"model_type": "xcodec"}, "xcodec"),
    ({"model_type": "chameleon"}, None),  # a full model without its vq_config: nothing to build
    ({"model_type": "glm_image", "vq_config": {}}, None),  # its quantizer reads ViT states: needs the vision model
    ({"model_type": "glm_image", "vq_config": {}, "vision_config": {}}, "glm_image"),
    ({"model_type": "glm_image_vqmodel"}, None),  # the VQ model alone cannot be fed pixels
    ({"model_type": "llama"}, None),
])
def test_config_json_picks_the_family(config, name):
    found = find_adapter(config)
    assert (found.name if found else None) == name


def test_every_adapter_is_registered_once_with_a_distinct_class():
    assert len({a.model_class for a in ADAPTERS}) == len(ADAPTERS) == 8


def _encodec_like_folder(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "encodec", "architectures": ["EncodecModel"]}))
    gen = torch.Generator().manual_seed(0)
    state = {}
    for level in range(2):
        p = f"quantizer.layers.{level}.codebook."
        embed = torch.randn(16, 4, generator=gen)
        state |= {p + "inited": torch.ones(1), p + "cluster_size": torch.ones(16), p + "embed": embed,
                  p + "embed_avg": embed.clone()}
    save_file(state, folder / "model.safetensors")
    return folder


def test_without_transformers_one_paragraph_says_what_to_install(tmp_path, monkeypatch):
    folder = _encodec_like_folder(tmp_path / "encodec")
    clips = tmp_path / "wavs"
    clips.mkdir()
    with wave.open(str(clips / "a.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\1\0" * 800)
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    res = runner.invoke(app, ["inspect", str(folder), "--inputs", str(clips)])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert 'pip install "vqdoctor[hf]"' in text and "transformers" in text
    assert "Traceback" not in res.output
    # the codebooks are still found and measured without it, data-free
    res = runner.invoke(app, ["inspect", str(folder), "--json", "-", "--projection", "none"])
    assert res.exit_code == 0, res.output
    assert [cb["name"] for cb in json.loads(res.stdout)["codebooks"]] == ["quantizer.layers.0", "quantizer.layers.1"]


def test_pixel_range_is_refused_with_latents_and_checked(tmp_path):
    z = tmp_path / "z.npy"
    np.save(z, np.zeros((4, 2), np.float32))
    folder = _encodec_like_folder(tmp_path / "encodec")
    for value in ("0,1", "-1,1"):  # "-1,1" is taken as the flag's value, not as a flag
        res = runner.invoke(app, ["inspect", str(folder), "--latents", str(z), "--pixel-range", value])
        assert res.exit_code == 2 and "does not apply" in " ".join(res.output.split()), res.output
    res = runner.invoke(app, ["inspect", str(folder), "--latents", str(z), "--pixel-range", "0,2"])
    assert res.exit_code == 2 and "is not one of" in " ".join(res.output.split())


def test_a_hub_id_is_read_from_the_cache_only(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub.constants")
    from vqdoctor.adapters.hub import cached_snapshot

    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-codec"
    snapshot = repo / "snapshots" / ("0" * 40)
    _encodec_like_folder(repo / "blobs")  # as huggingface_hub stores them: snapshot files link to blobs/
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    assert cached_snapshot("acme/tiny-codec") == snapshot.resolve()
    assert cached_snapshot("runs/model.safetensors") is None  # a file name is a path, not an id
    res = runner.invoke(app, ["inspect", "acme/tiny-codec", "--json", "-", "--projection", "none"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["checkpoint"]["path"] == str(snapshot.resolve())
    res = runner.invoke(app, ["inspect", "acme/not-cached"])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "is in your cache" in text and "never downloads" in text and "huggingface-cli download acme/not-cached" in text
