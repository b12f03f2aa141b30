"""2-D pictures of latents (and the codebook over them): PCA, t-SNE or UMAP.

The caller passes an already bounded set of points (e.g. a :func:`stratified_indices` subsample of
2,000-4,000 rows); codes beyond ``max_codes`` are subsampled. PCA projects the codes by the
points' map; t-SNE and UMAP embed points and codes jointly (they have no faithful out-of-sample
map), so the codes land among the latents they sit near.

Measured cost (approx.: one run each, on 2 CPU cores shared with other jobs at load average ~6,
so a quiet machine is faster; torch 2.13, scikit-learn 1.9, umap-learn 0.5.12; 128 codes embedded
jointly with the points; one BLAS/OpenMP thread, see below):

==========  =============  =============  =============  =============
method      n=2000, D=8    n=2000, D=64   n=4000, D=8    n=4000, D=64
==========  =============  =============  =============  =============
pca         0.02 s         0.03 s         0.01 s         0.03 s
tsne        6.6 s          6.6 s          15.6 s         15.6 s
umap        3.3 s          3.6 s          6.6 s          7.0 s
==========  =============  =============  =============  =============

UMAP's first call in a process also compiles its numba kernels: 8-13 s once with numba's on-disk
cache warm, 34 s on the very first run after installing (empty cache). Its k-NN graph is computed
here exactly (torch, chunked) and handed over as ``precomputed_knn``: that skips pynndescent, whose
own compile added ~30-50 s to the first call with 4,096 rows or more.
t-SNE's time hardly depends on ``max_iter`` between 300 and 500 (affinities dominate); its
default OpenMP threads made it 5-6x slower on the busy shared machine (30 s vs 5 s at n=2000),
hence one thread. Keep t-SNE inputs at ~2,000 points for an interactive ``inspect``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from vqdoctor.core.subsample import stratified_indices
from vqdoctor.errors import DataError, UsageError

PROJECTION_METHODS = ("pca", "tsne", "umap", "none")
TSNE_MAX_ITER = 500  # sklearn's minimum is 250; 500 settles 10 well-separated modes
_PRE_PCA_DIMS = 50  # t-SNE / UMAP run on at most this many principal components


@dataclass(frozen=True, eq=False)
class Projection:
    method: str  # "pca" | "tsne" | "umap"
    points_xy: np.ndarray  # (n, 2) float32, row i = points[i]
    codes_xy: np.ndarray | None  # (K', 2) float32, row j = codes[code_indices[j]]
    code_indices: np.ndarray | None  # (K',) int64 rows of ``codes`` shown (all when K <= max_codes)
    seconds: float  # wall time of the projection


def project_2d(
    points: torch.Tensor | np.ndarray,  # (n, D)
    *,
    codes: torch.Tensor | np.ndarray | None = None,  # (K, D), same space as points
    method: str = "pca",
    seed: int = 0,
    max_codes: int = 512,
) -> Projection | None:
    """Project ``points`` (and ``codes``) to 2-D; ``method="none"`` returns ``None``.

    - ``pca``: the points' top two principal axes (SVD of the centred points, signs fixed so the
      largest loading is positive); codes go through the same affine map.
    - ``tsne``: scikit-learn's Barnes-Hut t-SNE on points and codes together (PCA to <= 50 dims
      first), ``init="pca"``, ``learning_rate="auto"``, perplexity min(30, (rows - 1) / 3),
      ``max_iter`` 500.
    - ``umap``: umap-learn on points and codes together (PCA to <= 50 dims first),
      15 neighbours from an exact k-NN search, ``min_dist`` 0.1, ``random_state=seed``
      (deterministic, single-threaded).
    """
    if method not in PROJECTION_METHODS:
        raise UsageError(
            f"unknown projection method {method!r}",
            hint=f"choose one of: {', '.join(PROJECTION_METHODS)}",
        )
    if method == "none":
        return None
    x = _as_float32(points, "points")
    if x.ndim != 2 or x.shape[0] < 2:
        raise DataError(f"projection needs (n >= 2, D) points, got shape {tuple(x.shape)}")
    code_idx: np.ndarray | None = None
    c: np.ndarray | None = None
    if codes is not None:
        c = _as_float32(codes, "codes")
        if c.ndim != 2 or c.shape[1] != x.shape[1]:
            raise DataError(
                f"codes have shape {tuple(c.shape)} but the points have dim={x.shape[1]}"
            )
        if max_codes < 1:
            raise UsageError(f"max_codes must be >= 1, got {max_codes}")
        code_idx = stratified_indices(c.shape[0], max_codes, seed=seed)
        c = c[code_idx]
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    # one BLAS/OpenMP thread: deterministic, and on a busy machine t-SNE's OpenMP threads spin
    # (measured: 2,000 points took 30 s with the default threads vs 5 s with one, under load)
    with threadpool_limits(limits=1):
        if method == "pca":
            pxy, cxy = _pca(x, c)
        else:
            joint = x if c is None else np.concatenate([x, c])
            joint = _reduce(joint, _PRE_PCA_DIMS)
            xy = _tsne(joint, seed) if method == "tsne" else _umap(joint, seed)
            pxy, cxy = xy[: x.shape[0]], (None if c is None else xy[x.shape[0] :])
    seconds = time.perf_counter() - start
    return Projection(
        method=method,
        points_xy=np.ascontiguousarray(pxy, dtype=np.float32),
        codes_xy=None if cxy is None else np.ascontiguousarray(cxy, dtype=np.float32),
        code_indices=code_idx,
        seconds=float(seconds),
    )


def _as_float32(a: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu", torch.float32).numpy()
    a = np.asarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise DataError(f"{what} to project contain NaN or Inf")
    return a


def _pca(x: np.ndarray, c: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    mean = x.mean(0, dtype=np.float64)
    xc = x.astype(np.float64) - mean
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    axes = vt[:2].T  # (D, <=2)
    axes = axes * np.sign(axes[np.abs(axes).argmax(0), np.arange(axes.shape[1])])
    if axes.shape[1] < 2:  # D == 1: second coordinate is 0
        axes = np.concatenate([axes, np.zeros((axes.shape[0], 2 - axes.shape[1]))], axis=1)
    pxy = xc @ axes
    cxy = None if c is None else (c.astype(np.float64) - mean) @ axes
    return pxy, cxy


def _reduce(x: np.ndarray, dims: int) -> np.ndarray:
    if x.shape[1] <= dims:
        return x
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return (xc @ vt[:dims].T).astype(np.float32)


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(1.0, (x.shape[0] - 1) / 3.0)))
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        learning_rate="auto",
        max_iter=TSNE_MAX_ITER,
        random_state=seed,
    )
    return tsne.fit_transform(x)


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap: "n_jobs overridden by random_state", numba notes
        import umap

        n_neighbors = min(15, x.shape[0] - 1)
        idx, dist = _exact_knn(x, n_neighbors)  # skips pynndescent (and its numba compile)
        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=n_neighbors,
            min_dist=0.1,
            random_state=seed,
            precomputed_knn=(idx, dist, None),
        )
        return reducer.fit_transform(x)


def _exact_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest rows, itself first (umap's convention): (n, k) int64, (n, k) float32."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    sq = (t * t).sum(1)
    idx = np.empty((t.shape[0], k), dtype=np.int64)
    dist = np.empty((t.shape[0], k), dtype=np.float32)
    for start in range(0, t.shape[0], 1024):
        q = t[start : start + 1024]
        d = torch.addmm(sq.unsqueeze(0), q, t.T, beta=1.0, alpha=-2.0)  # (b, n)
        d += (q * q).sum(1, keepdim=True)
        r = torch.arange(q.shape[0])
        d[r, r + start] = -1.0  # itself first
        best, arg = d.topk(k, dim=1, largest=False)
        best[:, 0] = 0.0
        idx[start : start + q.shape[0]] = arg.numpy()
        dist[start : start + q.shape[0]] = best.clamp_min(0.0).sqrt().numpy()
    return idx, dist
