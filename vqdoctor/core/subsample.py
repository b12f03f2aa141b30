"""Bounded, deterministic, stratified subsampling of row indices.

Clustering, k-NN separability and 2-D projections run on a subsample of at most ``size`` rows so
that their cost does not grow with N. The index work itself is O(N) (one pass of uniform draws
compared with a per-stratum threshold, in chunks), then O(size log size) to pick the winners.
"""

from __future__ import annotations

import numpy as np

from vqdoctor.errors import UsageError

_CHUNK = 1 << 20  # rows per pass of random draws (bounded memory for huge N)
_MAX_MIN_PER_STRATUM = 10  # "a few points": each stratum gets up to this many, when possible


def stratified_indices(
    n: int,
    size: int,
    *,
    strata: np.ndarray | None = None,  # (n,) non-negative integer stratum (mode) ids
    seed: int = 0,
) -> np.ndarray:
    """Return sorted int64 indices of at most ``size`` rows out of ``n``.

    Without ``strata`` a uniform sample without replacement. With ``strata`` each stratum gets
    at least ``need = min(count, clamp(size // (2 * strata), 1, 10))`` rows, and the others a share
    proportional to their size, scaled down together to make room (largest remainders); when
    ``size`` is smaller than the number of non-empty strata, the largest strata get one row each.
    Inside a stratum the rows are a uniform sample. Deterministic for given
    ``(n, size, strata, seed)``.
    """
    if n < 0 or size < 0:
        raise UsageError(f"subsample needs n >= 0 and size >= 0, got n={n}, size={size}")
    if strata is not None:
        strata = np.asarray(strata)
        if strata.shape != (n,):
            raise UsageError(f"strata must have shape ({n},), got {tuple(strata.shape)}")
        if n and (not np.issubdtype(strata.dtype, np.integer) or strata.min() < 0):
            raise UsageError("strata must be non-negative integer ids (mode ids)")
    if size >= n:
        return np.arange(n, dtype=np.int64)
    if size == 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if strata is None:
        return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)

    counts = np.bincount(strata).astype(np.int64)  # (S,)
    quota = _allocate(counts, size)  # (S,) sums to size, quota <= counts
    # O(N): keep each row of stratum s with probability a bit above quota_s / count_s ...
    slack: np.ndarray = quota + 4.0 * np.sqrt(quota) + 8.0
    thresh = np.where(counts > 0, np.minimum(1.0, slack / np.maximum(counts, 1)), 0.0)
    thresh[quota == 0] = 0.0
    cand_idx: list[np.ndarray] = []
    cand_key: list[np.ndarray] = []
    for start in range(0, n, _CHUNK):
        s = strata[start : start + _CHUNK]
        u = np.asarray(rng.random(s.shape[0]))
        keep = np.flatnonzero(u < thresh[s])
        cand_idx.append(keep + start)
        cand_key.append(u[keep])
    idx = np.concatenate(cand_idx)
    key = np.concatenate(cand_key)
    # ... then the quota_s candidates with the smallest draws (a uniform sample of the stratum)
    chosen = _take_smallest(idx, key, strata[idx], quota)
    short = np.flatnonzero(np.bincount(strata[chosen], minlength=counts.size) < quota)
    if short.size:  # vanishingly rare: redo those strata exactly (O(N) each)
        parts = [chosen[~np.isin(strata[chosen], short)]]
        for stratum in short:
            members = np.flatnonzero(strata == stratum)
            parts.append(rng.choice(members, size=int(quota[stratum]), replace=False))
        chosen = np.concatenate(parts)
    return np.sort(chosen).astype(np.int64)


def _take_smallest(
    idx: np.ndarray, key: np.ndarray, stratum: np.ndarray, quota: np.ndarray
) -> np.ndarray:
    order = np.lexsort((key, stratum))  # by stratum, then by draw
    idx, stratum = idx[order], stratum[order]
    first = np.searchsorted(stratum, np.arange(quota.size))  # (S,) start of each group
    rank = np.arange(idx.size) - first[stratum]
    return idx[rank < quota[stratum]]


def _allocate(counts: np.ndarray, size: int) -> np.ndarray:
    """Per-stratum quotas summing to ``size`` (< counts.sum()): max(need, alpha * proportional
    share) with alpha <= 1, so the strata above their floor keep their proportions."""
    nonempty = int((counts > 0).sum())
    min_per = min(_MAX_MIN_PER_STRATUM, max(1, size // (2 * max(1, nonempty))))
    need = np.minimum(counts, min_per)
    if need.sum() >= size:  # too many strata: equal shares, largest strata first
        return _level_fill(np.zeros_like(counts), counts, size)
    exact = counts * (size / counts.sum())  # (S,) proportional shares, <= counts
    # scale the proportional shares by alpha <= 1 so that max(need, alpha * exact) sums to size
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.maximum(need, mid * exact).sum() <= size:
            lo = mid
        else:
            hi = mid
    share = np.maximum(need, lo * exact)
    quota = np.minimum(np.floor(share).astype(np.int64), counts)
    rest = size - int(quota.sum())
    if rest > 0:  # largest remainders first, among strata with room
        frac = np.where(quota < counts, share - quota, -1.0)
        quota[np.argsort(-frac, kind="stable")[:rest]] += 1
    return quota


def _level_fill(lower: np.ndarray, upper: np.ndarray, size: int) -> np.ndarray:
    """clip(L, lower, upper) with the largest integer L whose total fits ``size``; the leftover
    goes one each to the strata capped at L, largest upper bound first (lower.sum() <= size)."""
    lo, hi = 0, int(upper.max())
    while lo < hi:  # largest L with total <= size
        mid = (lo + hi + 1) // 2
        if int(np.clip(mid, lower, upper).sum()) <= size:
            lo = mid
        else:
            hi = mid - 1
    q = np.clip(lo, lower, upper).astype(np.int64)
    left = size - int(q.sum())
    if left:
        capped = np.flatnonzero((lower <= lo) & (upper > lo))  # the ones L + 1 would raise
        capped = capped[np.argsort(-upper[capped], kind="stable")]
        q[capped[:left]] += 1
    return q


__all__ = ["stratified_indices"]
