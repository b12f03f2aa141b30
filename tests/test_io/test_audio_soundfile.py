"""Audio through soundfile (the ``audio`` extra): every WAV width and float, FLAC, OGG; the
standard-library fallback without it; polyphase resampling and --sample-rate."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_io.test_audio import _tone, _write
from vqdoctor.errors import DataError, InputFileError, UsageError
from vqdoctor.io import media
from vqdoctor.io.data import open_inputs
from vqdoctor.io.media import read_audio, read_wav, resample

sf = pytest.importorskip("soundfile")


def _sf_write(path, samples, rate, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, **kwargs)


_SUBTYPES = {"PCM_U8": 2**-7, "PCM_16": 2**-15, "PCM_24": 2**-23, "PCM_32": 2**-31, "FLOAT": 1e-7, "DOUBLE": 1e-7}


@pytest.mark.parametrize("subtype", sorted(_SUBTYPES))
def test_every_wav_width_and_float_reads_the_written_samples(tmp_path, subtype):
    wave_ = _tone(440, n=1000, channels=2) * np.array([1.0, -0.5])
    sf.write(tmp_path / "x.wav", wave_, 16000, subtype=subtype)
    got, rate, total = read_audio(tmp_path / "x.wav", limit=None)
    assert (rate, total, got.shape, got.dtype) == (16000, 1000, (1000, 2), np.float32)
    assert np.abs(got - wave_).max() <= _SUBTYPES[subtype] + 1e-7
    if subtype.startswith("PCM"):  # the standard library's reader gives the very same samples
        mono, rate2, total2 = read_wav(tmp_path / "x.wav", limit=None)
        assert (rate2, total2) == (16000, 1000)
        assert np.array_equal(mono, got.mean(1))


@pytest.mark.parametrize(("fmt", "tol"), [("FLAC", 2**-15), ("OGG", 0.05)])
def test_flac_and_ogg_clips_are_read_from_a_class_folder(tmp_path, fmt, tol):
    for label, freq in (("low", 220), ("high", 1760)):
        _sf_write(tmp_path / label / f"a.{fmt.lower()}", _tone(freq, n=1600), 16000, format=fmt)
    src = open_inputs(tmp_path)
    assert src.label_names == ["high", "low"] and src.sample_shape == (1, 1600)
    x = src.take(np.array([0, 1])).numpy()[:, 0]
    err = np.abs(x[1, 200:-200] - _tone(220, n=1600)[200:-200, 0]).max()  # OGG is lossy (and has a pre-roll)
    assert err < tol
    peaks = np.argmax(np.abs(np.fft.rfft(x, axis=1)), axis=1) * 16000 / 1600
    assert peaks.tolist() == [1760.0, 220.0]


def test_without_soundfile_wav_still_reads_and_flac_names_the_extra(tmp_path, monkeypatch):
    _write(tmp_path / "a" / "x.wav", _tone(440))
    monkeypatch.setattr(media, "soundfile_module", lambda: None)
    assert np.allclose(open_inputs(tmp_path).take(np.array([0]))[0, 0].numpy(), _tone(440)[:, 0], atol=1e-4)
    _sf_write(tmp_path / "b" / "y.flac", _tone(440), 16000)
    with pytest.raises(InputFileError, match=r"y\.flac is FLAC, .*soundfile is not installed") as err:
        open_inputs(tmp_path)
    assert 'pip install "vqdoctor[audio]"' in err.value.hint


def test_float_wav_without_soundfile_points_at_the_extra(tmp_path, monkeypatch):
    sf.write(tmp_path / "x.wav", _tone(440), 16000, subtype="FLOAT")
    assert open_inputs(tmp_path).sample_shape == (1, 800)
    monkeypatch.setattr(media, "soundfile_module", lambda: None)
    with pytest.raises(InputFileError, match="could not be read as PCM WAV") as err:
        open_inputs(tmp_path)
    assert "vqdoctor[audio]" in err.value.hint


def test_resample_keeps_a_tones_frequency_and_the_clips_duration():
    rate, n = 44100, 44100  # one second of 440 Hz
    x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
    y = resample(x, 44100, 16000)
    assert y.shape == (16000,) and y.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) * 16000 / len(y) == 440.0
    assert abs(float(np.sqrt(np.mean(y[1000:-1000] ** 2))) - 0.5 / np.sqrt(2)) < 0.01  # amplitude kept
    assert resample(x, 16000, 16000) is x


def test_resample_removes_what_the_new_rate_cannot_hold():
    rate = 48000
    t = np.arange(rate) / rate
    x = (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 12000 * t)).astype(np.float32)  # 12 kHz > 8 kHz Nyquist
    y = resample(x, 48000, 16000)
    spectrum = np.abs(np.fft.rfft(y))
    aliased = spectrum[4000]  # 12 kHz would fold onto 4 kHz without the anti-alias filter
    assert aliased < 0.01 * spectrum[440]


def test_resample_refuses_ratios_too_fine():
    with pytest.raises(DataError, match=r"reduces to 16000/4294967291"):
        resample(np.zeros(10, np.float32), 4294967291, 16000)


def test_sample_rate_resamples_clips_read_with_a_cut(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(440, n=44100, rate=44100), 44100)
    src = open_inputs(tmp_path, sample_rate=16000)
    assert src.sample_shape == (1, 16000)
    full = src.take(np.array([0]))[0, 0].numpy()
    cut = open_inputs(tmp_path, sample_rate=16000, clip_seconds=0.5).take(np.array([0]))[0, 0].numpy()
    assert cut.shape == (8000,)
    assert np.abs(cut[:7900] - full[:7900]).max() < 1e-3  # reading only what the cut needs changes nothing
    assert np.argmax(np.abs(np.fft.rfft(full))) == 440


def test_sample_rate_on_an_array_or_image_input_is_a_usage_error(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(UsageError, match="--sample-rate applies to audio folders"):
        open_inputs(tmp_path / "x.npy", sample_rate=16000)


def test_a_forged_clip_length_is_capped_before_decoding(tmp_path, monkeypatch):
    sf.write(tmp_path / "a.flac", _tone(440), 16000)
    monkeypatch.setattr(media, "MAX_AUDIO_SAMPLES", 100)
    with pytest.raises(DataError, match="claims 800 frames x 1 channel"):
        open_inputs(tmp_path)


_CODEC = '''
from torch import nn

class Codec(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv1d(1, 8, kernel_size=40, stride=40)

def build():
    return Codec()
'''


def test_cli_flac_clips_at_48k_resampled_to_the_codecs_16k(tmp_path):
    import json

    import torch
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from vqdoctor.cli.app import app

    for name, freq in (("low", 200.0), ("high", 3000.0)):
        for i in range(3):
            _sf_write(tmp_path / "clips" / name / f"{i}.flac", _tone(freq, n=4800, rate=48000), 48000)
    (tmp_path / "codec.py").write_text(_CODEC)
    conv = torch.nn.Conv1d(1, 8, kernel_size=40, stride=40)
    state = {f"encoder.{k}": v for k, v in conv.state_dict().items()} | {"quantize.embedding.weight": torch.randn(16, 8)}
    save_file(state, str(tmp_path / "codec.safetensors"))
    args = ["inspect", str(tmp_path / "codec.safetensors"), "--inputs", str(tmp_path / "clips"),
            "--model", f"{tmp_path / 'codec.py'}:build", "--json", "-", "--projection", "none"]
    res = CliRunner().invoke(app, [*args, "--sample-rate", "16000"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["data"]["vectors"] == 6 * 40  # 0.1 s at 16 kHz = 1,600 samples -> 40 frames
    res = CliRunner().invoke(app, [*args, "--sample-rate", "0"])
    assert res.exit_code == 2 and "--sample-rate 0 is out of range" in res.output
