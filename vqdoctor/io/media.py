"""Images and audio clips decoded in bounded memory, and audio resampled.

Images: the pixel count in the header is checked before decoding (:data:`MAX_IMAGE_PIXELS`),
Pillow's own decompression-bomb guard is turned into the same clean error, and a truncated or
corrupt file is named.

Audio (:func:`read_audio`): with ``soundfile`` installed (``pip install "vqdoctor[audio]"``) WAV
(8/16/24/32-bit PCM, 32/64-bit float, WAVE_FORMAT_EXTENSIBLE), FLAC and OGG are decoded by
libsndfile; without it WAV PCM is read by the standard library (:func:`read_wav`) and FLAC/OGG are
refused with what to install. Either way a WAV header's claimed data is checked against the file's
size before anything is read (a header claiming ~4 GB costs nothing), and no clip may claim more
than :data:`MAX_AUDIO_SAMPLES` samples (frames x channels), since the decoders allocate what the
header claims. :func:`resample` is a polyphase filter (``scipy.signal.resample_poly``)."""

from __future__ import annotations

import math
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from vqdoctor.errors import DataError, InputFileError

# 2^25 pixels (about 5800 x 5800): one decoded RGB image as float32 is at most ~400 MB.
MAX_IMAGE_PIXELS = 1 << 25
PCM_WIDTHS = (1, 2, 3, 4)
# 2^28 samples: one clip as float32 is at most 1 GiB (about 93 minutes of 48 kHz mono).
MAX_AUDIO_SAMPLES = 1 << 28
WAV_SUFFIXES = (".wav",)
SOUNDFILE_SUFFIXES = (".flac", ".ogg")  # read only through soundfile
AUDIO_SUFFIXES = WAV_SUFFIXES + SOUNDFILE_SUFFIXES
# a resampling ratio up/down (gcd-reduced) with a larger term builds a filter too long to be useful
MAX_RESAMPLE_TERM = 1 << 16
AUDIO_EXTRA_HINT = 'Install the audio extra: pip install "vqdoctor[audio]" (soundfile), or convert the clips to PCM WAV.'


def decode_image(file: Path, *, mode: str | None = None, size: tuple[int, int] | None = None) -> Any:
    """``file`` decoded with Pillow (converted to ``mode``, resized to ``size`` when given), or
    only its header read when ``mode`` is None (returns ``(mode, (w, h))``). Raises
    :class:`DataError` for an image over :data:`MAX_IMAGE_PIXELS` and :class:`InputFileError`
    for one Pillow cannot decode."""
    from PIL import Image, UnidentifiedImageError

    hint = "Remove or re-save that file."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise DataError(
                        f"Image {file} is {w}x{h} = {w * h:,} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel cap "
                        "(a decompression bomb or an image far larger than a tokenizer takes).",
                        hint="Downscale it (or remove it); vqdoctor resizes with --image-size only after decoding.",
                    )
                if mode is None:
                    return img.mode, img.size
                out = img.convert(mode)
                if size is not None:
                    out = out.resize(size, Image.Resampling.BILINEAR)
                out.load()
                return out
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"Image {file} is over the {MAX_IMAGE_PIXELS:,}-pixel cap (Pillow: {exc})",
                        hint="Downscale it (or remove it); it may be a decompression bomb.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError,
            TypeError, ZeroDivisionError) as exc:
        raise InputFileError(f"Image {file} could not be decoded (truncated or corrupt?): {exc}.",
                             hint=hint) from None


def read_wav(file: Path, *, limit: int | None) -> tuple[np.ndarray, int, int]:
    """(mono float32 samples (at most ``limit``), sample rate, total frames) of a PCM WAV file,
    read by the standard library's ``wave`` module."""
    samples, rate, total, _ = _read_wav_frames(file, limit=limit)
    return samples.mean(1), rate, total


def _read_wav_frames(file: Path, *, limit: int | None) -> tuple[np.ndarray, int, int, int]:
    """(float32 samples (frames, channels), sample rate, total frames, channels) of a PCM WAV file."""
    import wave

    remedy = ("Convert it to 8/16/24/32-bit PCM WAV, or remove it (or install the audio extra, "
              'pip install "vqdoctor[audio]", for float and extensible WAV).')
    try:
        with wave.open(str(file), "rb") as w:
            channels, width, rate, total = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if width not in PCM_WIDTHS:
                raise InputFileError(f"Audio file {file} has {8 * width}-bit samples; vqdoctor reads 8, 16, 24 "
                                     "and 32-bit PCM only.", hint=remedy)
            if channels < 1 or rate < 1:
                raise InputFileError(f"Audio file {file} declares {channels} channel(s) at {rate} Hz.", hint=remedy)
            claimed, size = total * channels * width, file.stat().st_size
            if claimed > size:
                raise InputFileError(
                    f"Audio file {file} claims {total:,} frames ({claimed:,} bytes of samples) but the file "
                    f"holds {size:,} bytes (truncated or a forged header).", hint=remedy)
            raw = w.readframes(total if limit is None else min(total, limit))
    except InputFileError:
        raise
    except (wave.Error, EOFError, OSError, struct.error, ValueError, OverflowError, RuntimeError) as exc:
        detail = str(exc) or ("the file ends early" if isinstance(exc, EOFError) else type(exc).__name__)
        raise InputFileError(f"Audio file {file} could not be read as PCM WAV: {detail}.", hint=remedy) from None
    usable = len(raw) - len(raw) % (channels * width)
    raw = raw[:usable]
    if width == 1:
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        samples = (np.where(ints >= 1 << 23, ints - (1 << 24), ints) / float(1 << 23)).astype(np.float32)
    else:
        dtype, scale = (np.int16, float(1 << 15)) if width == 2 else (np.int32, float(1 << 31))
        samples = np.frombuffer(raw, dtype).astype(np.float32) / scale
    return samples.reshape(-1, channels), rate, total, channels


# --------------------------------------------------------------------------------------------
# audio through soundfile (or the standard library for WAV), and resampling


def soundfile_module() -> Any:
    """The ``soundfile`` module, or None when it is not installed (or libsndfile is missing)."""
    try:
        import soundfile  # type: ignore[import-untyped]
    except (ImportError, OSError):  # OSError: the package is there but libsndfile is not
        return None
    return soundfile


def audio_info(file: Path) -> tuple[int, int, int]:
    """``(sample rate, frames, channels)`` of an audio clip, from its header only."""
    _, rate, total, channels = _read(file, limit=0)
    return rate, total, channels


def read_audio(file: Path, *, limit: int | None) -> tuple[np.ndarray, int, int]:
    """``(samples (frames, channels) float32 in [-1, 1] (at most ``limit`` frames), sample rate,
    total frames)`` of a WAV, FLAC or OGG clip (see the module docstring for which reader)."""
    samples, rate, total, _ = _read(file, limit=limit)
    return samples, rate, total


def _read(file: Path, *, limit: int | None) -> tuple[np.ndarray, int, int, int]:
    sf = soundfile_module()
    suffix = file.suffix.lower()
    if sf is None:
        if suffix in SOUNDFILE_SUFFIXES:
            raise InputFileError(f"Audio file {file} is {suffix[1:].upper()}, which vqdoctor reads through the "
                                 "soundfile package, and soundfile is not installed.", hint=AUDIO_EXTRA_HINT)
        samples, rate, total, channels = _read_wav_frames(file, limit=limit)
        return samples, rate, total, channels
    if suffix in WAV_SUFFIXES:
        _check_wav_header(file)
    remedy = "Re-encode it as WAV, FLAC or OGG, or remove it."
    try:
        info = sf.info(str(file))
        rate, total, channels = int(info.samplerate), int(info.frames), int(info.channels)
        _check_audio_shape(file, rate, total, channels, remedy)
        count = total if limit is None else min(total, limit)
        if count == 0:
            return np.zeros((0, channels), np.float32), rate, total, channels
        data, _ = sf.read(str(file), frames=count, dtype="float32", always_2d=True)
    except InputFileError:
        raise
    except (RuntimeError, OSError, ValueError, TypeError, EOFError, OverflowError, MemoryError) as exc:
        raise InputFileError(f"Audio file {file} could not be decoded: {_first_line(exc)}.", hint=remedy) from None
    return np.ascontiguousarray(data, dtype=np.float32), rate, total, channels


def _check_audio_shape(file: Path, rate: int, total: int, channels: int, remedy: str) -> None:
    if channels < 1 or rate < 1:
        raise InputFileError(f"Audio file {file} declares {channels} channel(s) at {rate} Hz.", hint=remedy)
    if total * channels > MAX_AUDIO_SAMPLES:
        raise DataError(
            f"Audio file {file} claims {total:,} frames x {channels} channel(s), over the {MAX_AUDIO_SAMPLES:,}-"
            "sample cap (a forged header or a clip far longer than a codec takes).",
            hint="Cut it into shorter clips (or remove it); --clip-seconds cuts only after the header is read.")


def _check_wav_header(file: Path) -> None:
    """Walk the RIFF chunks of a WAV file up to ``data``: PCM widths other than 8/16/24/32 bits are
    refused by name, and the data the header claims must fit in the file. Files that are not plain
    RIFF/WAVE (RF64, damaged) are left to the decoder."""
    remedy = "Convert it to 8/16/24/32-bit PCM or float WAV, or remove it."
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            if fh.read(4) != b"RIFF" or len(fh.read(4)) != 4 or fh.read(4) != b"WAVE":
                return
            tag = block = bits = None
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    return
                name, length = head[:4], struct.unpack("<I", head[4:])[0]
                if name == b"fmt " and length >= 16:
                    fmt = fh.read(16)
                    if len(fmt) < 16:  # truncated inside the header: the decoder names it
                        return
                    tag, _, _, _, block, bits = struct.unpack("<HHIIHH", fmt)
                    fh.seek(length - 16 + (length & 1), 1)
                elif name == b"data":
                    break
                else:
                    fh.seek(length + (length & 1), 1)
            data_start = fh.tell()
    except OSError:
        return
    if tag == 1 and bits is not None and bits not in (8, 16, 24, 32):
        raise InputFileError(f"Audio file {file} has {bits}-bit samples; vqdoctor reads 8, 16, 24 and 32-bit "
                             "PCM (and float) only.", hint=remedy)
    if block and length > size - data_start:
        raise InputFileError(
            f"Audio file {file} claims {length // block:,} frames ({length:,} bytes of samples) but the file "
            f"holds {size:,} bytes (truncated or a forged header).", hint=remedy)


def resample(x: np.ndarray, from_sr: int, to_sr: int) -> np.ndarray:
    """``x`` (..., T) sampled at ``from_sr`` Hz resampled to ``to_sr`` Hz along its last axis with a
    polyphase filter (``scipy.signal.resample_poly``, up/down reduced by their gcd): the output has
    ``ceil(T * to_sr / from_sr)`` samples. Equal rates return ``x`` unchanged."""
    if from_sr < 1 or to_sr < 1:
        raise DataError(f"Cannot resample from {from_sr} Hz to {to_sr} Hz: rates must be positive.")
    if from_sr == to_sr:
        return x
    g = math.gcd(int(from_sr), int(to_sr))
    up, down = int(to_sr) // g, int(from_sr) // g
    if max(up, down) > MAX_RESAMPLE_TERM:
        raise DataError(
            f"Cannot resample {from_sr} Hz to {to_sr} Hz: the ratio reduces to {up}/{down}, whose terms are over "
            f"{MAX_RESAMPLE_TERM:,} (the filter would be too long).",
            hint="Resample the clips to a rate with a simpler ratio first (e.g. with sox or ffmpeg).")
    from scipy.signal import resample_poly  # type: ignore[import-untyped]

    return resample_poly(np.asarray(x, dtype=np.float32), up, down, axis=-1).astype(np.float32)


def resampled_length(frames: int, from_sr: int, to_sr: int) -> int:
    """How many samples :func:`resample` returns for ``frames`` input samples."""
    return frames if from_sr == to_sr else -(-frames * to_sr // from_sr)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
