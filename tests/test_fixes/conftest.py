"""Planted-collapse fixtures for the repair tests (seeded, built in memory)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

SHARES = (0.4, 0.3, 0.2, 0.1)


@dataclass
class Planted:
    x: torch.Tensor  # (N, d) latents
    modes: torch.Tensor  # (N,) mode of each latent
    means: torch.Tensor  # (M, d)
    collapsed: torch.Tensor  # (K, d) codes piled on mode 0


def planted(n: int = 4000, d: int = 8, k: int = 40, seed: int = 0) -> Planted:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(len(SHARES), d, generator=g) * 5
    modes = torch.multinomial(torch.tensor(SHARES), n, replacement=True, generator=g)
    x = means[modes] + torch.randn(n, d, generator=g)
    collapsed = means[0] + 0.3 * torch.randn(k, d, generator=g)  # tokens collapse: all codes on one peak
    return Planted(x=x, modes=modes, means=means, collapsed=collapsed)


@pytest.fixture
def plant() -> Planted:
    return planted()


def code_shares(codes: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Share of codes nearest to each mode mean."""
    owner = torch.cdist(codes, means).argmin(1)
    return torch.bincount(owner, minlength=means.shape[0]).float() / codes.shape[0]
