"""Exact nearest-code search as chunked matrix products: argmin_k ||c_k||^2 - 2 x.c_k.

Exact means exhaustive (every code is compared, no approximate index); the comparison itself is
float32 arithmetic, so two codes whose distances differ by a rounding error may swap, as in any
GEMM-based search (faiss ``IndexFlatL2``, ``torch.cdist``).

How it stays fast and bounded:
- never an N x K matrix: rows are taken in chunks and, for large K, codes too, with a running
  minimum across code chunks; one distance block is at most ``budget_bytes`` (and on CPU at most
  a cache-sized ``CPU_BLOCK_BYTES``, whatever the budget);
- one GEMM per block with the bias fused: ``x @ (-2C)^T + ||c||^2`` (scaling by -2 is exact in
  floating point), so ``||x||^2`` is never needed for the search. On CPU the GEMM is oneDNN's
  (``torch.ops.mkldnn._linear_pointwise``, bias as a fused post-op) where torch has it: on this
  project's AMD machines it runs ~2.2x faster than ``torch.mm``'s MKL, which takes its AVX2 path
  there; elsewhere, and on CUDA, ``torch.addmm``;
- on CPU, one single-threaded stream per core (Python threads; torch ops release the GIL), each
  over its own rows: no OpenMP barrier between the small ops of a block, each block stays in its
  core's cache, and a busy neighbour slows a stream down instead of stalling all of them;
- the arg-minimum is hierarchical: ``amin`` (a vectorised reduction) over groups of 64 codes,
  the lowest group holding the minimum is copied out with ``index_select`` (contiguous rows) and
  searched with ``argmin``. torch's ``min(dim)`` with indices over the whole block is a scalar
  loop on CPU that costs about half a GEMM at d=64; this costs a fraction of that;
- the returned squared distance is recomputed directly as ``||x - c_idx||^2`` (no cancellation).

Ties resolve to the lowest index, like ``argmin``: within a block by the reductions' first-index
rule, across code chunks by replacing only on a strictly smaller value, and exact duplicate codes
(common in collapsed codebooks: dead codes that never left their shared initial value) are
mapped to their lowest index explicitly, so that does not depend on the GEMM's rounding order.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from vqdoctor.errors import DataError, UsageError

DEFAULT_BUDGET_BYTES = 256 << 20
# On CPU a distance block larger than this stops fitting the caches and only slows the
# reductions down; measured on a 2-core AVX-512 machine (see benchmarks/README.md).
CPU_BLOCK_BYTES = 4 << 20
# Codebooks smaller than one full code chunk do better with half-size blocks
# (benchmarks/assign_blocks.py, idle machine, 2 threads, d = 64: K = 256 / 1,024 / 2,048 at
# 186 / 275 / 296 GFLOP/s with 2 MiB blocks against 162 / 242 / 236 with 4 MiB).
CPU_SMALL_K_BLOCK_BYTES = 2 << 20
CPU_MAX_CODE_CHUNK = 4096
MIN_ROWS_PER_WORKER = 256  # below this a second stream costs more than it gives
# codes per amin group of the hierarchical arg-minimum: 64, or 128 once code chunks are
# large enough that fewer, longer groups pay off (measured: 256 x 4096 blocks, -18% time)
_GROUP, _GROUP_LARGE, _LARGE_K = 64, 128, 4096
_METRICS = ("euclidean", "cosine")


@dataclass(frozen=True)
class PreparedCodes:
    """A codebook laid out for :func:`nearest_codes`; build it once with :func:`prepare_codes`
    when many batches are searched against the same codes."""

    metric: str
    size: int  # K
    dim: int  # d
    group: int  # codes per amin group
    compared: torch.Tensor  # (K, d) float32: the codes as compared (l2-normalised for cosine)
    weight: torch.Tensor  # (K_pad, d): -2c, padded with zero rows to a multiple of `group`
    bias: torch.Tensor  # (K_pad,): ||c||^2, padded with +inf (a padded code never wins)
    canonical: torch.Tensor | None  # (K,) int64: lowest index of each code's exact duplicates

    @property
    def device(self) -> torch.device:
        return self.weight.device


def prepare_codes(
    codes: torch.Tensor,  # (K, d)
    *,
    metric: str = "euclidean",
    codes_sq: torch.Tensor | None = None,  # (K,) precomputed ||c||^2 (euclidean only)
    device: torch.device | str | None = None,
) -> PreparedCodes:
    """Lay out ``codes`` for repeated searches (on ``device``, default the codes' device)."""
    if metric not in _METRICS:
        raise UsageError(f"unknown metric {metric!r}", "use 'euclidean' or 'cosine'")
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise DataError(f"codes must be a non-empty (K, d) matrix, got shape {tuple(codes.shape)}")
    dev = torch.device(device) if device is not None else codes.device
    c = codes.detach().to(device=dev, dtype=torch.float32)
    k, d = c.shape
    if metric == "cosine":
        c = torch.nn.functional.normalize(c, dim=1)
        sq = (c * c).sum(1)
    elif codes_sq is not None:
        if codes_sq.shape != (k,):
            raise DataError(f"codes_sq must have shape ({k},), got {tuple(codes_sq.shape)}")
        sq = codes_sq.detach().to(device=dev, dtype=torch.float32)
    else:
        sq = (c * c).sum(1)
    group = _GROUP_LARGE if k >= _LARGE_K else _GROUP if k >= _GROUP else k
    k_pad = -(-k // group) * group
    weight = torch.zeros(k_pad, d, dtype=torch.float32, device=dev)
    torch.mul(c, -2.0, out=weight[:k])
    bias = torch.full((k_pad,), float("inf"), dtype=torch.float32, device=dev)
    bias[:k] = sq
    c = c.contiguous()
    return PreparedCodes(
        metric=metric,
        size=k,
        dim=d,
        group=group,
        compared=c,
        weight=weight,
        bias=bias,
        canonical=_duplicate_canonical(c),
    )


def nearest_codes(
    x: torch.Tensor,  # (N, d), any float dtype; the search runs in float32 on x's device
    codes: torch.Tensor | PreparedCodes,  # (K, d), or prepared by prepare_codes
    *,
    metric: str = "euclidean",
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    codes_sq: torch.Tensor | None = None,  # (K,) precomputed ||c||^2 (euclidean)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(idx (N,) int64, sq_dist (N,) float32)``: each row's nearest code and the
    squared distance to it, on ``x``'s device.

    ``metric="cosine"`` compares l2-normalised rows and codes; the returned distance is then the
    squared distance between the normalised vectors, ``2 - 2 cos``. With a :class:`PreparedCodes`
    its own metric is used and ``metric``/``codes_sq`` are ignored."""
    if x.ndim != 2:
        raise DataError(f"vectors must be a (N, d) matrix, got shape {tuple(x.shape)}")
    if budget_bytes <= 0:
        raise UsageError(f"budget_bytes must be positive, got {budget_bytes}")
    if isinstance(codes, PreparedCodes):
        prep = codes if codes.device == x.device else _moved(codes, x.device)
    else:
        prep = prepare_codes(codes, metric=metric, codes_sq=codes_sq, device=x.device)
    if x.shape[1] != prep.dim:
        raise DataError(
            f"vectors have dim={x.shape[1]} but the codebook has dim={prep.dim}",
            "pass --channel-axis or --codebook",
        )
    return _search(x, prep, budget_bytes)


def nearest_other(
    points: torch.Tensor,  # (n, d)
    *,
    metric: str = "euclidean",
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each point's nearest *other* point of the same set: ``(idx (n,), sq_dist (n,))``.
    A point with an exact duplicate finds it at distance 0. Needs n >= 2."""
    if points.ndim != 2 or points.shape[0] < 2:
        raise DataError(f"need a (n, d) matrix with n >= 2, got shape {tuple(points.shape)}")
    if budget_bytes <= 0:
        raise UsageError(f"budget_bytes must be positive, got {budget_bytes}")
    prep = prepare_codes(points, metric=metric, device=points.device)
    prep = PreparedCodes(
        metric=prep.metric,
        size=prep.size,
        dim=prep.dim,
        group=prep.group,
        compared=prep.compared,
        weight=prep.weight,
        bias=prep.bias,
        canonical=None,  # the lowest duplicate may be the point itself
    )
    return _search(points, prep, budget_bytes, exclude_self=True)


def _moved(prep: PreparedCodes, device: torch.device) -> PreparedCodes:
    canon = prep.canonical.to(device) if prep.canonical is not None else None
    return PreparedCodes(
        metric=prep.metric,
        size=prep.size,
        dim=prep.dim,
        group=prep.group,
        compared=prep.compared.to(device),
        weight=prep.weight.to(device),
        bias=prep.bias.to(device),
        canonical=canon,
    )


def _block_shape(n: int, k_pad: int, group: int, budget_bytes: int, cpu: bool) -> tuple[int, int]:
    """(rows, codes) of one distance block: at most ``budget_bytes`` (and the cache-sized
    CPU_BLOCK_BYTES on CPU); the code chunk is a multiple of ``group``."""
    kb = min(k_pad, CPU_MAX_CODE_CHUNK) if cpu else k_pad
    cpu_cap = CPU_BLOCK_BYTES if kb >= CPU_MAX_CODE_CHUNK else CPU_SMALL_K_BLOCK_BYTES
    cap = min(budget_bytes, cpu_cap) if cpu else budget_bytes
    floats = max(group, cap // 4)
    # keep at least 64 rows per block when the budget allows, so the GEMM stays efficient
    kb = min(kb, max(group, floats // 64))
    kb = max(group, kb // group * group)
    rb = max(1, min(n, floats // kb))
    return rb, kb


def _search(
    x: torch.Tensor, prep: PreparedCodes, budget_bytes: int, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[0]
    dev = x.device
    idx = torch.empty(n, dtype=torch.int64, device=dev)
    dist = torch.empty(n, dtype=torch.float32, device=dev)
    if n == 0:
        return idx, dist
    cpu = dev.type == "cpu"
    rb, kb = _block_shape(n, prep.weight.shape[0], prep.group, budget_bytes, cpu=cpu)
    threads_before = torch.get_num_threads()
    workers = threads_before if cpu else 1
    workers = max(1, min(workers, n // MIN_ROWS_PER_WORKER))
    if workers == 1:
        _search_rows(x, prep, 0, n, rb, kb, exclude_self, idx, dist)
        return idx, dist
    # One single-threaded stream per core, each over its own rows: no barrier between the
    # many small ops of a block, and each stream keeps its blocks in its own core's cache.
    # MKL's thread count is process-wide, so it is restored when the streams are done.
    errors: list[BaseException] = []

    def work(lo: int, hi: int) -> None:
        try:
            torch.set_num_threads(1)
            _search_rows(x, prep, lo, hi, rb, kb, exclude_self, idx, dist)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    bounds = [n * i // workers for i in range(workers + 1)]
    threads = [
        threading.Thread(target=work, args=(bounds[i], bounds[i + 1]), daemon=True)
        for i in range(workers)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(threads_before)
    if errors:
        raise errors[0]
    return idx, dist


def _search_rows(
    x: torch.Tensor,
    prep: PreparedCodes,
    row_lo: int,
    row_hi: int,
    rb: int,
    kb: int,
    exclude_self: bool,
    idx: torch.Tensor,  # (N,) out
    dist: torch.Tensor,  # (N,) out
) -> None:
    """Search rows [row_lo, row_hi) of x in blocks of (rb rows, kb codes), writing idx/dist."""
    dev = x.device
    weight, bias = prep.weight, prep.bias
    k_pad, g = weight.shape[0], prep.group
    rb = max(1, min(rb, row_hi - row_lo))
    onednn = dev.type == "cpu" and _onednn_ok()
    direct = prep.metric == "euclidean" and x.dtype == torch.float32 and x.is_contiguous()
    xbuf = None if direct else torch.empty(rb, x.shape[1], dtype=torch.float32, device=dev)
    block = None if onednn else torch.empty(rb * min(kb, k_pad), dtype=torch.float32, device=dev)
    for start in range(row_lo, row_hi, rb):
        r = min(rb, row_hi - start)
        if xbuf is None:
            xv = x[start : start + r]
        else:
            xv = xbuf[:r]
            xv.copy_(x[start : start + r])
            if prep.metric == "cosine":
                xv.div_(torch.linalg.vector_norm(xv, dim=1, keepdim=True).clamp_min_(1e-12))
        best_val: torch.Tensor | None = None
        best_idx: torch.Tensor | None = None
        for k0 in range(0, k_pad, kb):
            k = min(kb, k_pad - k0)
            if onednn:  # (r, k) = x @ w^T + b, bias fused
                assert _linear is not None  # onednn is only set when it exists
                blk = _linear(xv, weight[k0 : k0 + k], bias[k0 : k0 + k], "none", [], "")
            else:
                assert block is not None
                blk = block[: r * k].view(r, k)
                torch.addmm(bias[k0 : k0 + k], xv, weight[k0 : k0 + k].T, out=blk)
            if exclude_self:  # row i of the chunk is point start + i: hide column start + i
                lo, hi = max(start, k0), min(start + r, k0 + k)
                if lo < hi:
                    blk[lo - start : hi - start, lo - k0 : hi - k0].fill_diagonal_(float("inf"))
            val, arg = _block_argmin(blk, g)
            if k0:
                arg.add_(k0)
            if best_val is None:
                best_val, best_idx = val, arg
            else:
                assert best_idx is not None
                better = val < best_val  # strict: an equal later code never wins
                best_val = torch.where(better, val, best_val)
                best_idx = torch.where(better, arg, best_idx)
        assert best_idx is not None
        if prep.canonical is not None:
            best_idx = prep.canonical[best_idx]
        idx[start : start + r] = best_idx
        diff = prep.compared.index_select(0, best_idx)
        diff.sub_(xv)
        torch.sum(diff.mul_(diff), dim=1, out=dist[start : start + r])


def _block_argmin(blk: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(min value, lowest arg-min) of each row of ``blk`` (r, k), k a multiple of ``group``."""
    r, k = blk.shape
    n_groups = k // group
    group_min = blk.view(r, n_groups, group).amin(2)  # (r, G) vectorised
    val, gi = group_min.min(1)  # lowest group holding the minimum
    rows = torch.arange(0, r * n_groups, n_groups, device=blk.device).add_(gi)
    sub = blk.view(r * n_groups, group).index_select(0, rows)  # (r, group) contiguous copies
    return val, sub.argmin(1).add_(gi * group)


_linear = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
_ONEDNN_STATE: list[bool] = []  # [ok] once checked


def _onednn_ok() -> bool:
    """Whether oneDNN's fused linear is present, exact (full fp32: no reduced-precision matmul
    mode is set) and agrees with torch.mm on a small check (once per process)."""
    if _linear is None or torch.get_float32_matmul_precision() != "highest":
        return False
    if not _ONEDNN_STATE:
        ok = False
        try:
            gen = torch.Generator().manual_seed(0)
            a, w = torch.randn(37, 19, generator=gen), torch.randn(70, 19, generator=gen)
            b = torch.randn(70, generator=gen)
            got = _linear(a, w, b, "none", [], "")
            ok = bool(torch.allclose(got, torch.addmm(b, a, w.T), rtol=1e-5, atol=1e-5))
        except (RuntimeError, TypeError, NotImplementedError):
            ok = False
        _ONEDNN_STATE.append(ok)
    return _ONEDNN_STATE[0]


def _stable_argsort(h: torch.Tensor) -> torch.Tensor:
    """Stable argsort; numpy's on CPU (torch's stable CPU sort is ~10x slower at K = 2^18)."""
    if h.device.type == "cpu":
        import numpy as np

        return torch.from_numpy(np.argsort(h.numpy(), kind="stable"))
    return torch.sort(h, stable=True).indices


def _duplicate_canonical(codes: torch.Tensor) -> torch.Tensor | None:
    """(K,) int64 map of each code to the lowest index of its exact duplicates, or None when
    every code is distinct. Rows are hashed from their bits (O(K d)); equal hashes are checked
    for real equality, so a hash collision never merges distinct codes."""
    k, d = codes.shape
    if k < 2:
        return None
    gen = torch.Generator(device="cpu").manual_seed(0x5EED)
    mult = torch.randint(1, 2**62, (d,), generator=gen, dtype=torch.int64).mul_(2).add_(1)
    mult = mult.to(codes.device)
    h = torch.empty(k, dtype=torch.int64, device=codes.device)
    step = max(1, (32 << 20) // (8 * d))  # int64 temporaries of at most 32 MiB
    for a in range(0, k, step):
        bits = (codes[a : a + step] + 0.0).view(torch.int32).to(torch.int64)  # -0.0 -> 0.0
        torch.sum(bits.mul_(mult), dim=1, out=h[a : a + step])  # wraps mod 2^64: fine for a hash
    order = _stable_argsort(h)  # equal hashes keep index order
    hs = h[order]
    same = hs[1:] == hs[:-1]
    if not bool(same.any()):
        return None
    # adjacent rows in hash order that are really equal continue a run of duplicates; the
    # stable sort puts each run's lowest index first
    pos = torch.nonzero(same).flatten()
    equal = torch.zeros_like(same)
    equal[pos] = (codes[order[pos]] == codes[order[pos + 1]]).all(1)
    if not bool(equal.any()):
        return None
    starts = torch.cat([torch.ones(1, dtype=torch.bool, device=codes.device), ~equal])
    run = torch.cumsum(starts, 0) - 1  # run id of each sorted position
    heads = order[starts]  # lowest index of each run
    canon = torch.empty(k, dtype=torch.int64, device=codes.device)
    canon[order] = heads[run]
    return canon
