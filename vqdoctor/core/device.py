"""The torch device for ``--device auto|cpu|cuda|cuda:N``: one rule for the CLI and the core."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vqdoctor.errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")  # and cuda:N


def check_device(name: str) -> str:
    """``name`` when it is one of :data:`DEVICE_CHOICES` or ``cuda:N``, else :class:`UsageError`.
    Needs no torch, so the command line checks it before any work."""
    base, _, index = name.partition(":")
    if base not in DEVICE_CHOICES or (":" in name and (base != "cuda" or not (index.isascii() and index.isdigit()))):
        raise UsageError(f"unknown device {name!r}: --device takes {', '.join(DEVICE_CHOICES)} or cuda:N.",
                         "Use --device auto to take CUDA when present.")
    return name


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cuda`` (or ``cuda:N``) without a usable GPU
    is an error, never a silent fall-back to CPU."""
    import torch

    base = check_device(name).split(":", 1)[0]
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
