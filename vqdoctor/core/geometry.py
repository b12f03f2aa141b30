"""Geometry of a codebook (spectrum, rank, near duplicates, codes off the data) and of a linear
code transform W (SimVQ), computed from the tensors alone.

Rules, so every number can be checked by hand:
- spectrum: singular values of the *centred* codebook (rows minus their mean; for cosine
  codebooks the rows are l2-normalised first, since that is what is compared), in float64;
- numerical rank: ``#{s > s_max * max(K, d) * eps(float32)}``, the usual matrix-rank tolerance
  at the precision codebooks are stored in (0 for an all-zero spectrum);
- effective rank (Roy & Vetterli 2007): ``exp(H(p))``, ``p = s / sum(s)``, ``0 ln 0 = 0``
  (0.0 for an all-zero spectrum);
- near-duplicate pairs: unordered pairs of codes whose euclidean distance (in the compared
  space) is below ``duplicate_tolerance * median nearest-neighbour distance``, the median taken
  over the distinct code values (so a pile of identical dead codes does not shrink the scale to
  0); exactly equal codes always count. ``redundant_codes`` is K minus the number of groups of
  mutually near-duplicate codes (connected components): a group of n copies adds n - 1, and
  ``K - redundant`` distinct codes remain. When K > ``max_codes_for_pairs`` all of this is
  computed *exactly on a seeded subsample* of that many codes (not scaled up); ``duplicate_sample``
  says how many codes were examined;
- codes outside the support of ``sample``: the support radius is the 99th percentile of the
  sample's nearest-neighbour distances (each sample vector to its nearest other one), a local
  scale of how far data points are from data; a code farther than that from every sample vector
  lies where the data does not go. The sample is subsampled to ``max_codes_for_pairs`` as well.
"""

from __future__ import annotations

import math

import torch

from vqdoctor.core.assign import DEFAULT_BUDGET_BYTES, nearest_codes, nearest_other
from vqdoctor.core.results import GeometryMetrics, WMetrics
from vqdoctor.errors import DataError, UsageError

_EPS32 = float(torch.finfo(torch.float32).eps)
SUPPORT_QUANTILE = 0.99


def spectrum_stats(m: torch.Tensor) -> tuple[list[float], int, float]:
    """(singular values descending, numerical rank, effective rank) of a 2-D matrix."""
    s = torch.linalg.svdvals(m.detach().to(device="cpu", dtype=torch.float64))
    s_max = float(s[0]) if s.numel() else 0.0
    if s_max <= 0.0:
        return [float(v) for v in s.tolist()], 0, 0.0
    tol = s_max * max(m.shape) * _EPS32
    rank = int((s > tol).sum())
    p = s / s.sum()
    p = p[p > 0]
    eff = math.exp(max(0.0, float(-(p * p.log()).sum())))
    return [float(v) for v in s.tolist()], rank, eff


def geometry_metrics(
    codes: torch.Tensor,  # (K, d) as compared
    *,
    metric: str,
    sample: torch.Tensor | None = None,  # (n, d) data vectors in the same space
    duplicate_tolerance: float = 0.01,
    max_codes_for_pairs: int = 16384,
    seed: int = 0,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> GeometryMetrics:
    """Geometry of one codebook; see the module docstring for the exact rules."""
    if metric not in ("euclidean", "cosine"):
        raise UsageError(f"unknown metric {metric!r}", "use 'euclidean' or 'cosine'")
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise DataError(f"codes must be a non-empty (K, d) matrix, got {tuple(codes.shape)}")
    if duplicate_tolerance < 0 or max_codes_for_pairs < 2:
        raise UsageError(
            "need duplicate_tolerance >= 0 and max_codes_for_pairs >= 2, got "
            f"{duplicate_tolerance} and {max_codes_for_pairs}"
        )
    c = codes.detach().to(torch.float32)
    if metric == "cosine":
        c = torch.nn.functional.normalize(c, dim=1)
    k, d = c.shape
    if sample is not None and (sample.ndim != 2 or sample.shape[1] != d):
        raise DataError(
            f"sample has shape {tuple(sample.shape)} but the codebook has dim={d}",
            "pass --channel-axis or --codebook",
        )
    gen = torch.Generator(device="cpu").manual_seed(seed)
    sv, rank, eff = spectrum_stats(c - c.mean(0, keepdim=True))

    pairs, redundant, median_nn, examined = 0, 0, None, min(k, max_codes_for_pairs)
    if k >= 2:
        sub = c if k <= max_codes_for_pairs else c[_subset(k, max_codes_for_pairs, gen, c.device)]
        pairs, redundant, median_nn = _near_duplicates(sub, duplicate_tolerance, budget_bytes)

    outside, radius = None, None
    if sample is not None and sample.shape[0] >= 2:
        x = sample.detach().to(device=c.device, dtype=torch.float32)
        if x.shape[0] > max_codes_for_pairs:
            x = x[_subset(x.shape[0], max_codes_for_pairs, gen, c.device)]
        _, nn_sq = nearest_other(x, metric=metric, budget_bytes=budget_bytes)
        radius = float(torch.quantile(nn_sq.double().sqrt(), SUPPORT_QUANTILE))
        _, code_sq = nearest_codes(c, x, metric=metric, budget_bytes=budget_bytes)
        outside = int((code_sq.double().sqrt() > radius).sum())

    return GeometryMetrics(
        singular_values=sv,
        numerical_rank=rank,
        effective_rank=eff,
        near_duplicate_pairs=pairs,
        redundant_codes=redundant,
        duplicate_sample=examined,
        duplicate_tolerance=duplicate_tolerance,
        median_nn_distance=median_nn,
        codes_outside_support=outside,
        support_radius=radius,
    )


def w_metrics(w: torch.Tensor, *, source: str) -> WMetrics:
    """Rank, effective rank, Frobenius norm and spectrum of a linear code transform (any 2-D
    matrix; orientation does not change any of these)."""
    if w.ndim != 2 or w.numel() == 0:
        raise DataError(f"W must be a non-empty 2-D matrix, got shape {tuple(w.shape)} ({source})")
    sv, rank, eff = spectrum_stats(w)
    frob = float(torch.linalg.vector_norm(w.detach().to(device="cpu", dtype=torch.float64)))
    return WMetrics(
        source=source,
        shape=(int(w.shape[0]), int(w.shape[1])),
        rank=rank,
        effective_rank=eff,
        frobenius_norm=frob,
        singular_values=sv,
    )


def _subset(n: int, m: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=gen)[:m].sort().values.to(device)


def _near_duplicates(
    c: torch.Tensor, tolerance: float, budget_bytes: int
) -> tuple[int, int, float]:
    """(near-duplicate pairs, redundant codes, median NN distance over distinct codes).

    Exact copies are grouped by value (``torch.unique``); each distinct code's nearest other
    distinct code comes from the fast search (its distance recomputed exactly); only the few
    distinct codes closer than the threshold are compared pairwise, in float64. Redundant codes
    are K minus the number of groups of mutually near-duplicate codes (connected components),
    so n copies of one code add n - 1."""
    k = c.shape[0]
    uniq, inverse, counts = torch.unique(c, dim=0, return_inverse=True, return_counts=True)
    counts = counts.to(torch.int64)
    pairs = int((counts * (counts - 1) // 2).sum())
    u = uniq.shape[0]
    if u < 2:
        return pairs, k - 1, 0.0
    _, nn_sq = nearest_other(uniq, metric="euclidean", budget_bytes=budget_bytes)
    nn = nn_sq.to(torch.float64).clamp_min(0.0).sqrt()
    median = float(torch.quantile(nn, 0.5))
    thr = tolerance * median
    close = (nn < thr).nonzero().flatten()
    groups = u
    if close.numel() >= 2:
        pts = uniq[close].to(torch.float64)
        dist = torch.cdist(pts, pts)  # (s, s), s = codes with a near neighbour (few)
        near = torch.triu(dist < thr, diagonal=1).nonzero()
        if near.numel():
            cnt = counts[close]
            pairs += int((cnt[near[:, 0]] * cnt[near[:, 1]]).sum())
            groups -= _merges(close.numel(), near)
    return pairs, k - groups, median


def _merges(n: int, edges: torch.Tensor) -> int:
    """How many unions the (m, 2) edges make among n nodes (n - connected components)."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    merged = 0
    for a, b in edges.tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
            merged += 1
    return merged
