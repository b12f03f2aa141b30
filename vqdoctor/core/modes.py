"""Data modes when no labels are given: a Gaussian mixture chosen by BIC.

Rule ("gmm-bic"), fitted on a bounded subsample (``sample_size`` rows, default 4,000):

1. standardise every feature (z-score; a constant feature keeps scale 1);
2. rotate onto the principal axes and keep at most ``max_dims`` = 10 of them. Ten modes need at
   most nine dimensions to be told apart, and a full covariance in 10 dimensions costs 65
   parameters per component, which 4,000 points estimate well; in 64 or 256 dimensions a full
   covariance would drown BIC in its own penalty, a diagonal one would count one elongated cluster
   as several;
3. for k = 1, 2, ..., ``max_modes``: k-means (k-means++ seeding, 3 restarts) then EM for a
   full-covariance Gaussian mixture started from the k-means partition; BIC = -2 log L +
   p_k log n. Both are this module's own numpy code (the same algorithms and stopping rules as
   scikit-learn's KMeans and GaussianMixture, which an earlier version called): importing
   sklearn.mixture alone took 2.5 s, more than the whole search. The k with the smallest BIC
   wins. The search stops early once BIC has not improved for 4 consecutive k (a BIC curve that has turned up for 4 steps does not come back down for
   Gaussian-like modes; this halves the cost when there are few modes).

Why BIC on a GMM: it is a likelihood-based rule with a penalty that grows with the number of
parameters, consistent for Gaussian mixtures, and it answers "1" for a single Gaussian (which
silhouette cannot: it is undefined for k = 1). Its known weakness is over-counting clearly
non-Gaussian clusters; the report says which rule produced the modes (``mode_source``).

Cost: see ``benchmarks/inspect_cost.py`` (mode inference against a whole ``inspect``).
``ModeModel.predict`` is pure torch (one (b, k, p) product) and is cheap on every streamed batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vqdoctor.core.finite import require_finite
from vqdoctor.core.subsample import stratified_indices
from vqdoctor.errors import DataError, UsageError

RULE = "gmm-bic"
DEFAULT_SAMPLE_SIZE = 4000
MAX_DIMS = 10  # principal axes kept before the mixture
_PATIENCE = 4  # stop after this many k without a better BIC
_REG_COVAR = 1e-4  # added to every covariance diagonal (features are standardised)
_PREDICT_ROWS = 16384


@dataclass(frozen=True, eq=False)
class ModeModel:
    """A fitted mode model. ``predict`` maps rows of the original feature space to mode ids."""

    k: int  # number of modes found
    rule: str  # "gmm-bic"
    sample: int  # rows it was fitted on
    bic: tuple[float, ...]  # BIC for k = 1 .. len(bic) (the search may stop early)
    center: torch.Tensor  # (f,) feature means
    scale: torch.Tensor  # (f,) feature standard deviations (1 for constant features)
    basis: torch.Tensor  # (f, p) principal axes of the standardised features
    means: torch.Tensor  # (k, p) component means
    prec_chol: torch.Tensor  # (k, p, p) Cholesky factors of the precisions (sklearn convention)
    log_norm: torch.Tensor  # (k,) log weight + log det prec_chol

    def predict(self, x: torch.Tensor) -> torch.Tensor:  # (b, f) -> (b,) int64
        """Most probable component of each row (ties: lowest id)."""
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.center.shape[0]:
            raise DataError(
                f"mode model expects rows of dim {self.center.shape[0]}, got shape {tuple(x.shape)}"
            )
        out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
        dev = x.device
        center, scale, basis = self.center.to(dev), self.scale.to(dev), self.basis.to(dev)
        means, chol, log_norm = self.means.to(dev), self.prec_chol.to(dev), self.log_norm.to(dev)
        mu_l = torch.einsum("kp,kpq->kq", means, chol)  # (k, p)
        for start in range(0, x.shape[0], _PREDICT_ROWS):
            z = ((x[start : start + _PREDICT_ROWS].to(torch.float64) - center) / scale) @ basis
            y = torch.einsum("bp,kpq->bkq", z, chol) - mu_l  # (b, k, p)
            logp = log_norm - 0.5 * (y * y).sum(-1)  # (b, k), constants dropped
            out[start : start + _PREDICT_ROWS] = logp.argmax(1)
        return out


def fit_modes(
    x: torch.Tensor,  # (n, f)
    *,
    max_modes: int = 20,
    seed: int = 0,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
) -> ModeModel:
    """Find the data's modes with the "gmm-bic" rule (module docstring) on at most
    ``sample_size`` rows drawn uniformly with ``seed``."""
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(f"modes need a non-empty (n, features) array, got shape {tuple(x.shape)}")
    if max_modes < 1:
        raise UsageError(f"max_modes must be >= 1, got {max_modes}")
    require_finite(x, "the vectors to cluster into modes")
    rows = stratified_indices(x.shape[0], sample_size, seed=seed)
    xs = x[torch.from_numpy(rows)].detach().to("cpu", torch.float64).numpy()  # (m, f)
    center = xs.mean(0)
    scale = xs.std(0)
    scale[scale <= 1e-12 * max(1.0, float(np.abs(center).max(initial=0.0)))] = 1.0
    z = (xs - center) / scale
    p = min(MAX_DIMS, z.shape[1])
    if z.shape[0] > 1:
        _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
        basis = vt[:p].T  # (f, p)
        basis = basis * np.sign(basis[np.abs(basis).argmax(0), np.arange(basis.shape[1])])
    else:
        basis = np.eye(z.shape[1])[:, :p]
    zp = z @ basis  # (m, p)
    # a full covariance needs a handful of points per parameter; never more modes than that allows
    cap = max(1, zp.shape[0] // (2 * (p + 1) + 2))
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    if zp.shape[0] < 2:  # nothing to fit: one mode
        k, bics = 1, tuple[float, ...]()
        means, chol, log_norm = zp.mean(0, keepdims=True), np.eye(p)[None], np.zeros(1)
    else:
        fits = _search(zp, max_k=min(max_modes, cap), seed=seed)
        _, k, gmm = min(fits, key=lambda f: (f[0], f[1]))  # (bic, k, gmm): smallest BIC
        bics = tuple(float(f[0]) for f in sorted(fits, key=lambda f: f[1]))
        means, chol = gmm.means_, gmm.precisions_cholesky_
        log_norm = np.log(gmm.weights_) + np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1)
    return ModeModel(
        k=int(k),
        rule=RULE,
        sample=int(zp.shape[0]),
        bic=bics,
        center=t(center),
        scale=t(scale),
        basis=t(basis),
        means=t(means),
        prec_chol=t(chol),
        log_norm=t(log_norm),
    )


def count_modes(
    x: torch.Tensor,  # (n, f)
    *,
    max_modes: int = 20,
    seed: int = 0,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
) -> int:
    """Number of modes the "gmm-bic" rule finds (the same rule as :func:`fit_modes`)."""
    return fit_modes(x, max_modes=max_modes, seed=seed, sample_size=sample_size).k


def _search(z: np.ndarray, *, max_k: int, seed: int) -> list[tuple[float, int, _Gmm]]:
    fits: list[tuple[float, int, _Gmm]] = []
    best = math.inf
    since_best = 0
    rng = np.random.default_rng(seed)
    for k in range(1, max_k + 1):
        labels = np.zeros(z.shape[0], dtype=np.int64) if k == 1 else _kmeans(z, k, rng)
        gmm = _em(z, *_init_from_labels(z, labels, k))
        bic = gmm.bic(z)
        fits.append((bic, k, gmm))
        if bic < best:
            best, since_best = bic, 0
        else:
            since_best += 1
            if since_best >= _PATIENCE:
                break
    return fits


@dataclass(frozen=True)
class _Gmm:
    """A fitted full-covariance Gaussian mixture (scikit-learn's conventions and attribute names)."""

    weights_: np.ndarray  # (k,)
    means_: np.ndarray  # (k, p)
    precisions_cholesky_: np.ndarray  # (k, p, p): precision = L L^T
    log_likelihood: float  # total over the rows it was fitted on

    def bic(self, z: np.ndarray) -> float:
        k, p = self.means_.shape
        params = (k - 1) + k * p + k * p * (p + 1) / 2
        return -2.0 * self.log_likelihood + params * math.log(z.shape[0])


def _log_resp(z: np.ndarray, weights: np.ndarray, means: np.ndarray, chol: np.ndarray) -> tuple[np.ndarray, float]:
    """Log responsibilities (n, k) and the total log-likelihood."""
    n, p = z.shape
    y = np.matmul(z[None], chol) - np.matmul(means[:, None, :], chol)  # (k, n, p): one GEMM per component
    log_det = np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1)  # (k,)
    logp = -0.5 * (p * math.log(2 * math.pi) + np.einsum("knp,knp->nk", y, y)) + log_det + np.log(weights)  # (n, k)
    top = logp.max(1, keepdims=True)
    norm = top + np.log(np.exp(logp - top).sum(1, keepdims=True))  # (n, 1)
    return logp - norm, float(norm.sum())


def _precision_cholesky(cov: np.ndarray) -> np.ndarray:  # (k, p, p) covariances -> (k, p, p)
    out = np.empty_like(cov)
    eye = np.eye(cov.shape[1])
    for j in range(cov.shape[0]):
        lower = np.linalg.cholesky(cov[j])
        out[j] = np.linalg.solve(lower, eye).T  # sklearn's convention: inv(L)^T
    return out


def _em(z: np.ndarray, weights: np.ndarray, means: np.ndarray, precisions: np.ndarray,
        *, max_iter: int = 100, tol: float = 1e-3) -> _Gmm:
    """EM for a full-covariance mixture from the given start (stops when the mean log-likelihood
    gains less than ``tol`` per iteration, as scikit-learn's GaussianMixture does)."""
    n, p = z.shape
    reg = _REG_COVAR * np.eye(p)
    chol = _precision_cholesky(np.linalg.inv(precisions))
    prev = -math.inf
    total = -math.inf
    for _ in range(max_iter):
        log_r, total = _log_resp(z, weights, means, chol)
        if total / n - prev < tol:
            break
        prev = total / n
        r = np.exp(log_r)  # (n, k)
        nk = r.sum(0) + 10 * np.finfo(np.float64).eps  # (k,)
        means = (r.T @ z) / nk[:, None]
        cov = np.empty((len(nk), p, p))
        for j in range(len(nk)):
            d = z - means[j]
            cov[j] = (r[:, j, None] * d).T @ d / nk[j] + reg
        weights = nk / n
        chol = _precision_cholesky(cov)
    else:
        _, total = _log_resp(z, weights, means, chol)
    return _Gmm(weights, means, chol, total)


def _kmeans(z: np.ndarray, k: int, rng: np.random.Generator, *, restarts: int = 3, iters: int = 100) -> np.ndarray:
    """Labels of the best of ``restarts`` k-means runs (k-means++ seeding, Lloyd to convergence)."""
    best_labels, best_inertia = None, math.inf
    sq = (z * z).sum(1)
    for _ in range(restarts):
        centres = _kmeans_pp(z, sq, k, rng)
        labels = np.zeros(z.shape[0], dtype=np.int64)
        for it in range(iters):
            d = sq[:, None] - 2.0 * z @ centres.T + (centres * centres).sum(1)[None]  # (n, k)
            new = d.argmin(1)
            if it and np.array_equal(new, labels):
                break
            labels = new
            onehot = np.zeros((z.shape[0], k))
            onehot[np.arange(z.shape[0]), labels] = 1.0
            size = onehot.sum(0)  # (k,)
            filled = size > 0  # an emptied centre stays where it was
            centres[filled] = (onehot.T @ z)[filled] / size[filled, None]
        inertia = float(d[np.arange(z.shape[0]), labels].sum())
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    assert best_labels is not None
    return best_labels


def _kmeans_pp(z: np.ndarray, sq: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii), with 2 + log k candidates per step like scikit-learn."""
    n = z.shape[0]
    trials = 2 + int(math.log(k))
    centres = np.empty((k, z.shape[1]))
    first = int(rng.integers(n))
    centres[0] = z[first]
    closest = np.maximum(sq - 2.0 * z @ z[first] + sq[first], 0.0)  # (n,) squared distance to the nearest centre
    for j in range(1, k):
        total = closest.sum()
        if total <= 0:
            centres[j:] = z[rng.integers(n, size=k - j)]
            break
        cand = np.searchsorted(np.cumsum(closest), rng.random(trials) * total).clip(max=n - 1)  # (t,)
        d = np.maximum(sq[:, None] - 2.0 * z @ z[cand].T + sq[cand][None], 0.0)  # (n, t)
        pot = np.minimum(closest[:, None], d).sum(0)
        pick = int(pot.argmin())
        centres[j] = z[cand[pick]]
        closest = np.minimum(closest, d[:, pick])
    return centres


def _init_from_labels(
    z: np.ndarray, labels: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = z.shape[1]
    counts = np.bincount(labels, minlength=k).astype(np.float64)  # (k,)
    weights = np.maximum(counts, 1.0) / np.maximum(counts, 1.0).sum()
    means = np.zeros((k, p))
    precisions = np.zeros((k, p, p))
    for j in range(k):
        member = z[labels == j]
        if member.shape[0] == 0:
            means[j] = z[j % z.shape[0]]
            cov = np.eye(p)
        else:
            means[j] = member.mean(0)
            d = member - means[j]
            cov = d.T @ d / member.shape[0]
        precisions[j] = np.linalg.inv(cov + _REG_COVAR * np.eye(p) * 10)
    return weights, means, precisions
