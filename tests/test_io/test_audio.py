"""Audio folders (what neural audio codecs are fed): PCM WAV clips in class sub-folders."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from vqdoctor.errors import DataError, UsageError
from vqdoctor.io.data import open_inputs


def _write(path, samples: np.ndarray, *, rate: int = 16000, width: int = 2) -> None:
    """samples: (T, channels) floats in [-1, 1]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if width == 1:
        raw = np.round(samples * 127 + 128).astype(np.uint8).tobytes()
    elif width == 2:
        raw = np.round(samples * 32767).astype("<i2").tobytes()
    else:  # 24-bit little endian
        ints = np.round(samples * (2**23 - 1)).astype(np.int32).reshape(-1)
        raw = np.stack([ints & 255, (ints >> 8) & 255, (ints >> 16) & 255], 1).astype(np.uint8).tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


def _tone(freq: float, n: int = 800, rate: int = 16000, channels: int = 1) -> np.ndarray:
    t = np.arange(n) / rate
    return np.repeat((0.5 * np.sin(2 * np.pi * freq * t))[:, None], channels, 1)


@pytest.mark.parametrize("width", [1, 2, 3])
def test_pcm_widths_decode_to_the_same_wave(tmp_path, width):
    _write(tmp_path / "a" / "x.wav", _tone(440), width=width)
    src = open_inputs(tmp_path)
    x = src.take(np.array([0]))
    assert x.shape == (1, 1, 800)
    assert np.allclose(x[0, 0].numpy(), _tone(440)[:, 0], atol=1e-2)
    assert src.label_names == ["a"]


def test_stereo_is_mixed_to_mono_and_classes_come_from_folders(tmp_path):
    stereo = np.stack([_tone(300)[:, 0], -_tone(300)[:, 0] * 0 + 0.2], 1)
    _write(tmp_path / "speech" / "0.wav", stereo)
    _write(tmp_path / "music" / "0.wav", _tone(880))
    src = open_inputs(tmp_path)
    assert src.label_names == ["music", "speech"] and src.labels.tolist() == [0, 1]
    x = src.take(np.array([1]))
    assert np.allclose(x[0, 0].numpy(), (stereo[:, 0] + stereo[:, 1]) / 2, atol=1e-3)


def test_clip_seconds_cuts_and_pads(tmp_path):
    _write(tmp_path / "long.wav", _tone(440, n=1600))
    _write(tmp_path / "short.wav", _tone(440, n=400))
    with pytest.raises(DataError, match="differ in length") as err:
        open_inputs(tmp_path)
    assert "--clip-seconds" in err.value.hint
    src = open_inputs(tmp_path, clip_seconds=0.05)  # 800 samples at 16 kHz
    batch, _ = next(src.batches(8))
    assert batch.shape == (2, 1, 800)
    assert float(batch[1, 0, 400:].abs().max()) == 0.0  # the short clip (sorted second) is zero-padded


def test_mixed_sample_rates_are_refused_naming_each_rate(tmp_path):
    _write(tmp_path / "a.wav", _tone(440), rate=16000)
    _write(tmp_path / "b.wav", _tone(440), rate=24000)
    with pytest.raises(DataError, match=r"2 sample rates: 16000 Hz \(1 clip\(s\), e\.g\. .*a\.wav\); 24000 Hz") as err:
        open_inputs(tmp_path, clip_seconds=0.01)
    assert "--sample-rate" in err.value.hint
    src = open_inputs(tmp_path, clip_seconds=0.01, sample_rate=8000)  # both resampled to 8 kHz
    batch, _ = next(src.batches(8))
    assert batch.shape == (2, 1, 80)


def test_options_for_the_wrong_kind_of_folder(tmp_path):
    _write(tmp_path / "a.wav", _tone(440))
    with pytest.raises(UsageError, match="--image-size"):
        open_inputs(tmp_path, image_size=8)

