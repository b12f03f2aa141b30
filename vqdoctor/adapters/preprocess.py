"""The models' own input preparation, on the tensors vqdoctor's readers give.

Images arrive as (b, C, H, W) in [0, 1] (an image folder, or an array of that form); audio as
(b, 1, T) in [-1, 1], mono, at the clips' sample rate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vqdoctor.errors import DataError

AUDIO_SUFFIXES = (".wav",)


def to_rgb(x: Tensor) -> Tensor:
    """(b, 1 or 3, H, W) -> (b, 3, H, W): a grey channel is repeated, as PIL's convert("RGB") does."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"Images for this model must be (N, 3, H, W) or (N, 1, H, W); got {tuple(x.shape)}.",
                        "Point --inputs at an image folder, or an array of images in [0, 1].")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def check_unit_range(x: Tensor) -> Tensor:
    """Images must arrive in [0, 1] (an image folder always does; an array file may not)."""
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise DataError(f"Images for this model must be scaled to [0, 1]; these span [{lo:g}, {hi:g}].",
                        "Divide uint8 images by 255 (vqdoctor then scales them the model's way), or point --inputs "
                        "at an image folder.")
    return x


def resize_center_crop(x: Tensor, size: int) -> Tensor:
    """Shortest side resized to ``size`` (bicubic, antialiased), then the centre ``size x size``
    cut out: the resize + centre crop of the VQGAN family's image processors."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    out = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return out[..., top : top + size, left : left + size].clamp(0.0, 1.0)


def crop_to_multiple(x: Tensor, factor: int) -> Tensor:
    """The centre of ``x`` with height and width cut down to multiples of ``factor``."""
    h, w = x.shape[-2:]
    nh, nw = h - h % factor, w - w % factor
    if nh < factor or nw < factor:
        raise DataError(f"Images of {h}x{w} pixels are smaller than the model's {factor}-pixel patch.",
                        "Pass --image-size with a larger size.")
    top, left = (h - nh) // 2, (w - nw) // 2
    return x[..., top : top + nh, left : left + nw]


def scale_pixels(x: Tensor, pixel_range: tuple[float, float]) -> Tensor:
    """[0, 1] -> [lo, hi]."""
    lo, hi = pixel_range
    return x * (hi - lo) + lo


def resample(x: Tensor, source: int, target: int) -> Tensor:
    """(b, c, T) sampled at ``source`` Hz -> at ``target`` Hz, with scipy's polyphase filter
    (``resample_poly``, Kaiser window), as torchaudio / librosa would."""
    if source == target:
        return x
    from scipy.signal import resample_poly  # type: ignore[import-untyped]

    g = math.gcd(source, target)
    out = resample_poly(x.detach().cpu().numpy().astype(np.float64), target // g, source // g, axis=-1)
    return torch.from_numpy(out.astype(np.float32)).to(x.device)


def mix_channels(x: Tensor, channels: int) -> Tensor:
    """(b, c, T) -> (b, channels, T): mixed down to mono, or mono copied to each channel."""
    if x.shape[1] == channels:
        return x
    mono = x.mean(1, keepdim=True)
    return mono if channels == 1 else mono.expand(-1, channels, -1).contiguous()


def source_rate(inputs: Path | None) -> int | None:
    """The sample rate of the clips of an --inputs audio folder (vqdoctor's reader insists they
    share the first clip's rate): the first clip's header. None for anything else."""
    if inputs is None or not Path(inputs).is_dir():
        return None
    first = next(iter(sorted(p for p in Path(inputs).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)), None)
    if first is None:
        return None
    from vqdoctor.io.media import read_wav

    return int(read_wav(first, limit=0)[1])
