"""k-means for codebook re-initialisation: Lloyd iterations on chunked nearest-code search.

Every nearest-centroid step goes through :func:`vqdoctor.core.assign.nearest_codes`, so memory
stays bounded by ``budget_bytes`` (never an N x k matrix) and speed follows that function.

**Seeding ("k-means++", batched D^2 sampling).** Exact k-means++ picks one centre at a time: k
sequential passes, hopeless at k = 65,536. We keep its sampling rule (a point is drawn with
probability proportional to D^2, its squared distance to the nearest centre chosen so far) but
draw centres in rounds of growing size: 1 uniform centre, then rounds of b = max(1, g * drawn)
centres drawn *without replacement* proportional to D^2 (exponential-race keys ``E_i / D^2_i``,
top-b), after which D^2 is updated with one ``nearest_codes`` call against only the new centres.
g = max(1/8, k^(1/12) - 1), so about 12-20 rounds reach any k. This is the oversampling idea of
k-means|| (Bahmani et al., 2012) without its reduction step. Cost: sum_b N*b*d = N*k*d flops --
one Lloyd assignment pass -- plus O(N) per round, and memory O(N + k*d); seeding looks at a
uniform subsample of at most 64 k points (so small k seeds on a fraction of a large N).
Within a round the draws do not see each other, so two centres may land in the same
high-error region; Lloyd fixes that, and the seeding inertia stays within ~5% of sequential
(non-greedy) k-means++ (tested). sklearn's *greedy* k-means++ (2 + log k trials per centre)
seeds better still, at k sequential steps.

**Lloyd.** Each iteration is one exact assignment (mergeable sums per cluster: float64 sums,
int64 counts, float64 inertia -- :func:`lloyd_step_sums`), then centroids = sums / counts.
Empty clusters are re-seeded from the points with the largest current error (distinct points,
largest first). ``metric="cosine"`` runs spherical k-means: rows are l2-normalised, centroids
are normalised means, the error is the squared distance between unit vectors (2 - 2 cos).
The loop stops after ``iters`` updates or when the relative inertia decrease falls below
``tol``; a final assignment gives the exact counts and inertia of the returned centroids.

Deterministic for a given seed on a given device (random draws come from a CPU generator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vqdoctor.core.assign import DEFAULT_BUDGET_BYTES, nearest_codes
from vqdoctor.core.finite import require_finite
from vqdoctor.errors import DataError, UsageError

METRICS = ("euclidean", "cosine")
INITS = ("k-means++", "random")
_MIN_GROWTH = 0.125  # centres drawn per seeding round, at least this fraction of those already drawn
_SEED_POINTS_PER_CENTROID = 64  # seeding looks at a uniform subsample of at most 64 k points
_ROUNDS = 12  # ... and enough that about this many rounds reach k (each round costs O(N d) overhead)

# progress(iteration done, iterations at most, inertia after it): called after every Lloyd update
LloydProgress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class KMeansResult:
    centroids: torch.Tensor  # (k, d) float32, on x's device; unit rows for metric="cosine"
    inertia: float  # sum over points of the squared distance to the nearest returned centroid
    counts: torch.Tensor  # (k,) int64, points assigned to each returned centroid
    iters: int  # Lloyd updates performed
    seeding_inertia: float | None = None  # inertia right after seeding (first assignment)


def lloyd_step_sums(
    x: torch.Tensor,  # (N, d) float32 (already l2-normalised for cosine)
    centroids: torch.Tensor,  # (k, d) float32
    *,
    metric: str = "euclidean",
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One assignment pass as mergeable sums: ``(sums (k, d) float64, counts (k,) int64,
    inertia float)``. Sums over shards add up to the sums of one pass over all rows, so a
    distributed k-means all-reduces these three and then divides."""
    sums, counts, inertia, _, _ = _assign_sums(x, centroids, metric=metric, budget_bytes=budget_bytes)
    return sums, counts, inertia


def kmeans(
    x: torch.Tensor,  # (N, d)
    k: int,
    *,
    iters: int = 20,
    seed: int = 0,
    metric: str = "euclidean",
    init: str = "k-means++",
    tol: float = 1e-4,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    progress: LloydProgress | None = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` into ``k`` centroids (see the module docstring); ``progress``
    hears about every Lloyd iteration."""
    x = _validate(x, k, iters=iters, metric=metric, init=init, tol=tol)
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    if init == "random":
        pick = torch.randperm(x.shape[0], generator=gen)[:k].to(x.device)
        centroids = x[pick].clone()
    else:
        centroids = seed_kmeanspp(x, k, generator=gen, budget_bytes=budget_bytes)

    return _lloyd(x, centroids, iters=iters, tol=tol, metric=metric, budget_bytes=budget_bytes, progress=progress)


def seed_kmeanspp(
    x: torch.Tensor,  # (N, d) float32, normalised for cosine
    k: int,
    *,
    generator: torch.Generator,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> torch.Tensor:
    """Batched D^2 seeding (growing rounds; see the module docstring). Returns (k, d)."""
    n = x.shape[0]
    if n > _SEED_POINTS_PER_CENTROID * k:
        keep = torch.randperm(n, generator=generator)[: _SEED_POINTS_PER_CENTROID * k].to(x.device)
        x, n = x[keep], _SEED_POINTS_PER_CENTROID * k
    first = int(torch.randint(n, (1,), generator=generator))
    _, d2 = nearest_codes(x, x[first : first + 1], budget_bytes=budget_bytes)
    d2[first] = 0.0
    rest = _draw_rounds(x, d2, k - 1, generator=generator, budget_bytes=budget_bytes)
    return torch.cat([x[first : first + 1], rest])


def kmeans_extend(
    x: torch.Tensor,  # (N, d)
    fixed: torch.Tensor,  # (m, d) centroids that must not move
    k_new: int,
    *,
    iters: int = 20,
    seed: int = 0,
    metric: str = "euclidean",
    tol: float = 1e-4,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    progress: LloydProgress | None = None,
) -> KMeansResult:
    """Add ``k_new`` centroids to ``fixed`` ones that stay put: D^2 seeding against the fixed
    centroids (so new ones start in the worst-served regions), then Lloyd iterations that move
    only the new ones. ``centroids``/``counts`` of the result are the NEW centroids' only;
    ``inertia`` is over all m + k_new centroids. Used to revive dead codes."""
    if k_new < 1:
        raise UsageError(f"k-means extension needs k_new >= 1, got {k_new}")
    x = _validate(x, k_new, iters=iters, metric=metric, init="k-means++", tol=tol)
    fixed = fixed.detach().to(device=x.device, dtype=torch.float32)
    if fixed.dim() != 2 or fixed.shape[1] != x.shape[1]:
        raise DataError(f"fixed centroids must be (m, {x.shape[1]}), got {tuple(fixed.shape)}")
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
        fixed = torch.nn.functional.normalize(fixed, dim=1)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    m = fixed.shape[0]
    if m:
        _, d2 = nearest_codes(x, fixed, metric=metric, budget_bytes=budget_bytes)
        new = _draw_rounds(x, d2, k_new, generator=gen, budget_bytes=budget_bytes, metric=metric)
    else:
        new = seed_kmeanspp(x, k_new, generator=gen, budget_bytes=budget_bytes)
    centroids = torch.cat([fixed, new])
    res = _lloyd(x, centroids, iters=iters, tol=tol, metric=metric, budget_bytes=budget_bytes, n_fixed=m,
                 progress=progress)
    return KMeansResult(
        centroids=res.centroids[m:], inertia=res.inertia, counts=res.counts[m:], iters=res.iters,
        seeding_inertia=res.seeding_inertia,
    )


def _draw_rounds(
    x: torch.Tensor,
    d2: torch.Tensor,  # (N,) squared distance to the nearest centre chosen so far (0 = chosen)
    count: int,
    *,
    generator: torch.Generator,
    budget_bytes: int,
    metric: str = "euclidean",
) -> torch.Tensor:
    """Draw ``count`` more centres by D^2 sampling in rounds of growing size. Returns (count, d)."""
    n = x.shape[0]
    out = torch.empty(count, x.shape[1], dtype=x.dtype, device=x.device)
    taken = torch.zeros(n, dtype=torch.bool, device=x.device)
    have = 0
    growth = max(_MIN_GROWTH, count ** (1.0 / _ROUNDS) - 1.0)
    while have < count:
        b = min(max(1, int((have + 1) * growth)), count - have)
        # exponential race: keys E_i / w_i, the b smallest are a D^2-weighted draw without
        # replacement; points with no error (chosen ones) are drawn last, uniformly.
        e = torch.empty(n, dtype=torch.float32).exponential_(1.0, generator=generator).to(x.device)
        w = d2.to(torch.float32)
        keys = torch.where(w > 0, e / w, e + 1e30)
        keys[taken] = float("inf")
        new = torch.topk(keys, b, largest=False, sorted=True).indices
        taken[new] = True
        out[have : have + b] = x[new]
        _, nd2 = nearest_codes(x, out[have : have + b], metric=metric, budget_bytes=budget_bytes)
        d2 = torch.minimum(d2, nd2)
        d2[new] = 0.0
        have += b
    return out


def _lloyd(
    x: torch.Tensor,
    centroids: torch.Tensor,
    *,
    iters: int,
    tol: float,
    metric: str,
    budget_bytes: int,
    n_fixed: int = 0,
    progress: LloydProgress | None = None,
) -> KMeansResult:
    sums, counts, inertia, _, dist = _assign_sums(x, centroids, metric=metric, budget_bytes=budget_bytes)
    seeding_inertia = inertia
    done = 0
    for _ in range(iters):
        centroids = _update(sums, counts, centroids, x, dist, metric=metric, n_fixed=n_fixed)
        sums, counts, new_inertia, _, dist = _assign_sums(x, centroids, metric=metric, budget_bytes=budget_bytes)
        done += 1
        converged = inertia > 0 and (inertia - new_inertia) <= tol * inertia
        inertia = new_inertia
        if progress is not None:
            progress(done, iters, float(inertia))
        if converged or inertia == 0.0:
            break
    return KMeansResult(
        centroids=centroids, inertia=float(inertia), counts=counts, iters=done, seeding_inertia=seeding_inertia
    )


def _validate(x: torch.Tensor, k: int, *, iters: int, metric: str, init: str, tol: float) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"k-means needs an (N, d) tensor of vectors, got {shape}")
    n = int(x.shape[0])
    if n == 0:
        raise DataError("k-means got no vectors (N=0)", "Pass latents with at least k rows.")
    if k < 1:
        raise UsageError(f"k-means needs k >= 1, got k={k}")
    if k > n:
        raise UsageError(
            f"k-means needs at least as many vectors as clusters: k={k} clusters but only N={n} vectors",
            "Pass more data (more inputs or a larger --max-vectors) or fix a smaller codebook.",
        )
    if iters < 0:
        raise UsageError(f"k-means needs iters >= 0, got {iters}")
    if tol < 0:
        raise UsageError(f"k-means needs tol >= 0, got {tol}")
    if metric not in METRICS:
        raise UsageError(f"unknown k-means metric {metric!r}; expected one of {', '.join(METRICS)}")
    if init not in INITS:
        raise UsageError(f"unknown k-means init {init!r}; expected one of {', '.join(INITS)}")
    x = x.detach().to(torch.float32)
    require_finite(x, "the k-means input")
    return x.contiguous()


SUM_CHUNK = 8192  # rows converted to float64 at a time (a 4 MiB buffer at d = 64)


def _assign_sums(
    x: torch.Tensor, centroids: torch.Tensor, *, metric: str, budget_bytes: int
) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor, torch.Tensor]:
    k, d = centroids.shape
    idx, dist = nearest_codes(x, centroids, metric=metric, budget_bytes=budget_bytes)
    counts = torch.bincount(idx, minlength=k)
    sums = torch.zeros(k, d, dtype=torch.float64, device=x.device)
    # float64 sums (exact to merge across shards) through one reused, cache-sized float64 buffer
    # instead of a float64 copy of every vector
    buf = torch.empty(min(SUM_CHUNK, x.shape[0]), d, dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], SUM_CHUNK):
        rows = buf[: min(SUM_CHUNK, x.shape[0] - start)]
        rows.copy_(x[start : start + SUM_CHUNK])
        sums.index_add_(0, idx[start : start + SUM_CHUNK], rows)
    inertia = float(dist.sum(dtype=torch.float64))
    return sums, counts, inertia, idx, dist


def _update(
    sums: torch.Tensor,
    counts: torch.Tensor,
    old: torch.Tensor,
    x: torch.Tensor,
    dist: torch.Tensor,
    *,
    metric: str,
    n_fixed: int = 0,
) -> torch.Tensor:
    """New centroids from the sums; empty clusters take the worst-served points. The first
    ``n_fixed`` centroids never move."""
    live = counts > 0
    live[:n_fixed] = True
    centroids = old.clone()
    upd = live.clone()
    upd[:n_fixed] = False
    centroids[upd] = (sums[upd] / counts[upd].unsqueeze(1).to(torch.float64)).to(old.dtype)
    empty = (~live).nonzero().flatten()
    if empty.numel():
        worst = torch.topk(dist, int(empty.numel()), largest=True, sorted=True).indices
        centroids[empty] = x[worst]
    if metric == "cosine":
        centroids[n_fixed:] = torch.nn.functional.normalize(centroids[n_fixed:], dim=1)
    return centroids
