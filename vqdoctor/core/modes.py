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
   p_k log n. The k with the smallest BIC wins. The search stops early once BIC has not improved
   for 4 consecutive k (a BIC curve that has turned up for 4 steps does not come back down for
   Gaussian-like modes; this halves the cost when there are few modes).

Why BIC on a GMM: it is a likelihood-based rule with a penalty that grows with the number of
parameters, consistent for Gaussian mixtures, and it answers "1" for a single Gaussian (which
silhouette cannot: it is undefined for k = 1). Its known weakness is over-counting clearly
non-Gaussian clusters; the report says which rule produced the modes (``mode_source``).

Cost (approx., one thread on a shared 2-core machine): 4,000 points with 10 modes in 2, 3, 8 or
64 dims, 0.2-0.4 s (14 mixtures fitted: k = 1..10, then 4 without improvement). The fits run with
one BLAS/OpenMP thread: k-means' OpenMP threads spinning on a busy machine cost 10x more.
``ModeModel.predict`` is pure torch (one (b, k, p) product) and is cheap on every streamed batch.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

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
    if not bool(torch.isfinite(x).all()):
        raise DataError("the vectors to cluster into modes contain NaN or Inf")
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
        k, bics = 1, ()
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


def _search(z: np.ndarray, *, max_k: int, seed: int) -> list[tuple[float, int, object]]:
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    fits: list[tuple[float, int, object]] = []
    best = math.inf
    since_best = 0
    # one thread: the fits are small, and OpenMP spinning on a busy machine costs more than it gives
    with threadpool_limits(limits=1):
        for k in range(1, max_k + 1):
            if k == 1:
                labels = np.zeros(z.shape[0], dtype=np.int64)
            else:
                km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(z)
                labels = km.labels_
            weights, means, precisions = _init_from_labels(z, labels, k)
            gmm = GaussianMixture(
                n_components=k,
                covariance_type="full",
                reg_covar=_REG_COVAR,
                init_params="random_from_data",  # cheap; overridden by the *_init below
                weights_init=weights,
                means_init=means,
                precisions_init=precisions,
                random_state=seed,
                max_iter=100,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning: the fit is still usable
                gmm.fit(z)
            bic = float(gmm.bic(z))
            fits.append((bic, k, gmm))
            if bic < best:
                best, since_best = bic, 0
            else:
                since_best += 1
                if since_best >= _PATIENCE:
                    break
    return fits


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
