"""Images and WAV clips decoded in bounded memory.

Images: the pixel count in the header is checked before decoding (:data:`MAX_IMAGE_PIXELS`),
Pillow's own decompression-bomb guard is turned into the same clean error, and a truncated or
corrupt file is named. WAV: PCM 8/16/24/32-bit only; the frames the header claims are checked
against the file's size before anything is read, so a header claiming ~4 GB costs nothing."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from vqdoctor.errors import DataError, InputFileError

# 2^25 pixels (about 5800 x 5800): one decoded RGB image as float32 is at most ~400 MB.
MAX_IMAGE_PIXELS = 1 << 25
PCM_WIDTHS = (1, 2, 3, 4)


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
    """(mono float32 samples (at most ``limit``), sample rate, total frames) of a PCM WAV file."""
    import wave

    remedy = "Convert it to 8/16/24/32-bit PCM WAV, or remove it."
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
    return samples.reshape(-1, channels).mean(1), rate, total
