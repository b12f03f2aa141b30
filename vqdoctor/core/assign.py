"""Exact nearest-code search as chunked matrix products: ||x||^2 - 2 x C^T + ||C||^2.

Never materialises an N x K matrix: rows are processed in chunks whose distance block fits
``budget_bytes``. Ties resolve to the lowest index, like ``argmin``.
"""

from __future__ import annotations

import torch

DEFAULT_BUDGET_BYTES = 256 << 20


def _row_chunk(n: int, k: int, budget_bytes: int) -> int:
    return max(1, min(n, budget_bytes // max(1, 4 * k)))


def nearest_codes(
    x: torch.Tensor,  # (N, d) float32
    codes: torch.Tensor,  # (K, d) float32, same device
    *,
    metric: str = "euclidean",
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    codes_sq: torch.Tensor | None = None,  # (K,) precomputed ||c||^2 (euclidean)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (idx (N,) int64, sq_dist (N,) float32) of each row's nearest code.

    ``metric="cosine"`` compares l2-normalised rows and codes; the returned distance is then the
    squared distance between the normalised vectors (2 - 2 cos)."""
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
        codes = torch.nn.functional.normalize(codes, dim=1)
        codes_sq = None
    if codes_sq is None:
        codes_sq = (codes * codes).sum(1)
    n = x.shape[0]
    idx = torch.empty(n, dtype=torch.int64, device=x.device)
    dist = torch.empty(n, dtype=torch.float32, device=x.device)
    step = _row_chunk(n, codes.shape[0], budget_bytes)
    for start in range(0, n, step):
        xb = x[start : start + step]
        # (b, K) block: ||c||^2 - 2 x.c ; ||x||^2 added after the argmin
        block = torch.addmm(codes_sq.unsqueeze(0), xb, codes.T, beta=1.0, alpha=-2.0)
        best, arg = block.min(dim=1)
        idx[start : start + step] = arg
        dist[start : start + step] = (best + (xb * xb).sum(1)).clamp_min_(0.0)
    return idx, dist
