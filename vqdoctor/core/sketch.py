"""Seeded random projections that keep neighbourhoods (Johnson-Lindenstrauss), used to compare
high-dimensional raw inputs (e.g. images) by k-NN and clustering at a bounded cost."""

from __future__ import annotations

import torch

SKETCH_DIM = 256


def random_projection(dim_in: int, *, dim_out: int = SKETCH_DIM, seed: int = 0) -> torch.Tensor:
    """(dim_in, dim_out) Gaussian matrix scaled by 1/sqrt(dim_out): ||x R|| ≈ ||x||, and pairwise
    distances are kept within a small relative error with high probability."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(dim_in, dim_out, generator=gen) / dim_out**0.5
