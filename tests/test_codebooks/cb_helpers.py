"""Helpers for the detector tests: state dicts built with the exact key names and shapes of the
libraries' own source (each test names the file it follows)."""

from __future__ import annotations

import torch

from vqdoctor.codebooks import Discovery, find_codebooks
from vqdoctor.io.store import TensorStore


def discover(tensors: dict[str, torch.Tensor], config: dict | None = None) -> Discovery:
    return find_codebooks(TensorStore.from_dict(tensors), config=config)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed))
