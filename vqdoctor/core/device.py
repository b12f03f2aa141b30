"""Pick the torch device for ``--device auto|cpu|cuda``."""

from __future__ import annotations

import torch

from vqdoctor.errors import UsageError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cuda`` (or ``cuda:N``) without a usable GPU
    is an error, never a silent fall-back to CPU."""
    base = name.split(":", 1)[0]
    if base not in DEVICE_CHOICES or (base != "cuda" and ":" in name):
        raise UsageError(
            f"unknown device {name!r}", "use --device auto, cpu, cuda or cuda:N"
        )
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(
            f"--device {name} was requested but no CUDA device is available "
            f"(torch {torch.__version__}, built with CUDA: {torch.version.cuda or 'no'})",
            "use --device cpu or --device auto, or install a CUDA build of torch",
        )
    dev = torch.device(name)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(
            f"--device {name} was requested but only {torch.cuda.device_count()} CUDA "
            "device(s) exist",
            "use --device cuda or a smaller index",
        )
    return dev
