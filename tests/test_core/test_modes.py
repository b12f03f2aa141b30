"""Modes without labels (gmm-bic) and the stratified subsample they run on."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from vqdoctor.core.modes import ModeModel, count_modes, fit_modes
from vqdoctor.core.subsample import stratified_indices
from vqdoctor.errors import DataError, UsageError


def separated_centres(rng: np.random.Generator, m: int, dim: int, sep: float) -> np.ndarray:
    """m centres at least ``sep`` apart (rejection sampling in a box roomy enough for 2-D)."""
    out: list[np.ndarray] = []
    while len(out) < m:
        c = rng.uniform(-3 * sep, 3 * sep, size=dim)
        if all(np.linalg.norm(c - o) >= sep for o in out):
            out.append(c)
    return np.stack(out)


def ten_clusters(dim: int, *, per: int = 400, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """The paper's synthetic set-up: 10 Gaussian clusters, standardised (StandardScaler)."""
    rng = np.random.default_rng(seed)
    centres = separated_centres(rng, 10, dim, 8.0)
    y = np.repeat(np.arange(10), per)
    x = centres[y] + rng.normal(size=(y.size, dim))
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=torch.float32), y


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


# ------------------------------------------------------------------------------- subsample


def test_subsample_all_when_size_covers_n():
    assert stratified_indices(5, 10).tolist() == [0, 1, 2, 3, 4]


def test_subsample_uniform_is_sorted_unique_deterministic():
    a = stratified_indices(10_000, 300, seed=3)
    b = stratified_indices(10_000, 300, seed=3)
    assert a.dtype == np.int64 and a.size == 300
    assert np.array_equal(a, b) and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, stratified_indices(10_000, 300, seed=4))


def test_subsample_strata_proportional_with_small_strata_represented():
    rng = np.random.default_rng(0)
    sizes = [50_000, 30_000, 15_000, 4_990, 10]
    strata = rng.permutation(np.repeat(np.arange(5), sizes))
    idx = stratified_indices(strata.size, 1000, strata=strata, seed=1)
    got = np.bincount(strata[idx], minlength=5)
    assert idx.size == 1000 and np.unique(idx).size == 1000
    assert got[4] == 10  # the 10-point stratum: all of it ("a few points", here min 10)
    assert abs(got[0] - 500) <= 6 and abs(got[1] - 300) <= 6 and abs(got[2] - 150) <= 6
    assert got[3] >= 45


def test_subsample_more_strata_than_size_gives_one_each_to_the_largest():
    strata = np.repeat(np.arange(8), [100, 90, 80, 70, 60, 50, 40, 30])
    idx = stratified_indices(strata.size, 5, strata=strata, seed=0)
    assert sorted(set(strata[idx].tolist())) == [0, 1, 2, 3, 4]


def test_subsample_skips_empty_strata_ids():
    strata = np.array([0, 0, 0, 5, 5, 5, 5, 5, 5, 5] * 100)
    idx = stratified_indices(strata.size, 50, strata=strata, seed=0)
    got = np.bincount(strata[idx], minlength=6)
    assert idx.size == 50 and got[0] == 15 and got[5] == 35


def test_subsample_rejects_bad_strata():
    with pytest.raises(UsageError):
        stratified_indices(3, 2, strata=np.array([0, -1, 2]))
    with pytest.raises(UsageError):
        stratified_indices(3, 2, strata=np.array([0, 1]))


# ----------------------------------------------------------------------------------- modes


@pytest.mark.parametrize("dim", [2, 3, 8])
def test_recovers_ten_separated_clusters(dim):
    x, y = ten_clusters(dim)
    start = time.perf_counter()
    model = fit_modes(x, seed=0)
    seconds = time.perf_counter() - start
    assert isinstance(model, ModeModel) and model.rule == "gmm-bic"
    assert model.k == 10
    pred = model.predict(x).numpy()
    assert pred.dtype == np.int64 and pred.shape == (4000,)
    assert same_partition(pred, y)
    assert seconds < 30  # a few seconds on a quiet machine; generous for a shared one


def test_single_gaussian_is_one_mode():
    x = torch.randn(4000, 8, generator=torch.Generator().manual_seed(0))
    x[:, 1] += 0.8 * x[:, 0]  # correlated: a diagonal model would split it, a full one must not
    assert count_modes(x, seed=0) == 1


def test_high_dimensional_clusters_through_the_principal_axes():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(5, 64)) * 3.0
    y = rng.integers(0, 5, 3000)
    x = torch.tensor(centres[y] + rng.normal(size=(3000, 64)), dtype=torch.float32)
    assert count_modes(x, seed=0) == 5


def test_fit_is_deterministic_and_bounded_by_the_subsample():
    x, _ = ten_clusters(2, per=1000)
    a = fit_modes(x, seed=1, sample_size=2000)
    b = fit_modes(x, seed=1, sample_size=2000)
    assert a.sample == 2000 and a.k == b.k == 10
    assert torch.equal(a.predict(x), b.predict(x))


def test_max_modes_caps_the_search():
    x, _ = ten_clusters(2)
    assert fit_modes(x, max_modes=4).k <= 4


def test_bad_inputs():
    with pytest.raises(DataError):
        fit_modes(torch.empty(0, 3))
    with pytest.raises(DataError):
        fit_modes(torch.tensor([[0.0, float("nan")]] * 10))
    with pytest.raises(UsageError):
        fit_modes(torch.randn(10, 2), max_modes=0)
    model = fit_modes(torch.randn(200, 2), max_modes=2)
    with pytest.raises(DataError):
        model.predict(torch.randn(4, 3))


def test_constant_feature_and_tiny_input():
    x = torch.randn(500, 3)
    x[:, 2] = 7.0
    assert fit_modes(x, max_modes=3).k >= 1
    assert fit_modes(torch.randn(1, 4)).k == 1
