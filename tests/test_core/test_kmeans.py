"""k-means: seeding, Lloyd, spherical, empty clusters, mergeable sums, errors."""

from __future__ import annotations

import pytest
import torch

from vqdoctor.core.assign import nearest_codes
from vqdoctor.core.kmeans import kmeans, kmeans_extend, lloyd_step_sums, seed_kmeanspp
from vqdoctor.errors import DataError, UsageError


def blobs(n: int = 4000, k: int = 12, d: int = 8, spread: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=g) * 6
    lab = torch.randint(k, (n,), generator=g)
    return means[lab] + spread * torch.randn(n, d, generator=g), means


def test_recovers_planted_blobs() -> None:
    x, means = blobs()
    best = float(nearest_codes(x, means)[1].sum())
    results = [kmeans(x, 12, iters=30, seed=s).inertia for s in range(3)]
    assert min(results) <= best * 1.01


def test_deterministic_for_a_seed() -> None:
    x, _ = blobs()
    a, b = kmeans(x, 16, seed=3), kmeans(x, 16, seed=3)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.counts, b.counts)
    assert a.inertia == b.inertia


def test_result_is_consistent() -> None:
    x, _ = blobs()
    r = kmeans(x, 20, iters=10)
    idx, d2 = nearest_codes(x, r.centroids)
    assert torch.equal(torch.bincount(idx, minlength=20), r.counts)
    assert r.inertia == pytest.approx(float(d2.double().sum()), rel=1e-5)
    assert r.centroids.shape == (20, 8) and int(r.counts.sum()) == x.shape[0]
    assert r.seeding_inertia is not None and r.inertia <= r.seeding_inertia


def test_every_cluster_non_empty_when_k_equals_n() -> None:
    x = torch.randn(64, 4)
    r = kmeans(x, 64, iters=5)
    assert int((r.counts > 0).sum()) == 64
    assert r.inertia == pytest.approx(0.0, abs=1e-6)


def test_empty_clusters_reseeded_from_worst_points() -> None:
    # duplicates: random init puts several centroids on one point; they must spread out
    x = torch.cat([torch.zeros(50, 2), torch.ones(50, 2) * 10, torch.tensor([[20.0, 0.0], [0.0, 20.0]])])
    r = kmeans(x, 4, iters=10, init="random", seed=0)
    assert int((r.counts > 0).sum()) == 4
    assert r.inertia == pytest.approx(0.0, abs=1e-4)


def test_spherical_kmeans_gives_unit_centroids() -> None:
    x, _ = blobs(d=6)
    r = kmeans(x * torch.rand(x.shape[0], 1) * 5 + 0.01, 10, metric="cosine")
    assert torch.allclose(r.centroids.norm(dim=1), torch.ones(10), atol=1e-5)
    _, d2 = nearest_codes(x, r.centroids, metric="cosine")
    assert float(d2.max()) <= 4.0 + 1e-5


def test_seeding_close_to_sequential_kmeanspp() -> None:
    from sklearn.cluster import kmeans_plusplus

    x, _ = blobs(n=8000, k=40, d=16, spread=1.0)
    ours = [float(nearest_codes(x, seed_kmeanspp(x, 256, generator=torch.Generator().manual_seed(s)))[1].sum()) for s in range(3)]
    ref = [float(nearest_codes(x, torch.from_numpy(kmeans_plusplus(x.numpy(), 256, random_state=s, n_local_trials=1)[0]))[1].sum()) for s in range(3)]
    assert sum(ours) <= 1.10 * sum(ref)


def test_lloyd_sums_merge_over_shards() -> None:
    x, means = blobs()
    c = means + 0.5
    s, n, e = lloyd_step_sums(x, c)
    parts = [lloyd_step_sums(x[i : i + 1000], c) for i in range(0, x.shape[0], 1000)]
    assert s.dtype == torch.float64 and n.dtype == torch.int64
    assert torch.allclose(s, sum(p[0] for p in parts)) and torch.equal(n, sum(p[1] for p in parts))
    assert e == pytest.approx(sum(p[2] for p in parts), rel=1e-9)
    # one Lloyd step from the sums
    assert torch.allclose((s / n[:, None]).float(), torch.stack([x[nearest_codes(x, c)[0] == j].mean(0) for j in range(12)]), atol=1e-4)


def test_extend_keeps_fixed_centroids() -> None:
    x, means = blobs()
    fixed = means[:9]
    r = kmeans_extend(x, fixed, 3, iters=10)
    assert r.centroids.shape == (3, 8)
    idx, _ = nearest_codes(x, torch.cat([fixed, r.centroids]))
    assert int((torch.bincount(idx, minlength=12)[9:] > 0).sum()) == 3
    # the three new centroids land on the three uncovered blobs
    assert float(nearest_codes(means[9:], r.centroids)[1].max()) < 1.0


def test_k_larger_than_n_names_both() -> None:
    with pytest.raises(UsageError, match=r"k=50.*N=10"):
        kmeans(torch.randn(10, 3), 50)


@pytest.mark.parametrize("bad", [torch.randn(5), torch.zeros(0, 3)])
def test_bad_shapes(bad: torch.Tensor) -> None:
    with pytest.raises(DataError):
        kmeans(bad, 1)


def test_nan_rejected() -> None:
    x = torch.randn(20, 3)
    x[4, 1] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        kmeans(x, 2)


def test_unknown_options() -> None:
    with pytest.raises(UsageError, match="metric"):
        kmeans(torch.randn(20, 3), 2, metric="manhattan")
    with pytest.raises(UsageError, match="init"):
        kmeans(torch.randn(20, 3), 2, init="forgy")


def test_large_k_seeding_runs() -> None:
    x = torch.randn(6000, 16)
    c = seed_kmeanspp(x, 4096, generator=torch.Generator().manual_seed(0))
    assert c.shape == (4096, 16)
    # drawn without replacement: distinct points
    assert torch.unique(c, dim=0).shape[0] == 4096


def test_progress_hears_every_lloyd_iteration() -> None:
    from vqdoctor.core.kmeans import kmeans as _kmeans

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 4, generator=g) + 6 * torch.randint(0, 5, (3000, 1), generator=g).float()
    heard: list[tuple[int, int, float]] = []
    res = _kmeans(x, 16, iters=7, tol=0.0, seed=0, progress=lambda i, n, inertia: heard.append((i, n, inertia)))
    assert [h[0] for h in heard] == list(range(1, res.iters + 1)) and all(h[1] == 7 for h in heard)
    assert heard[-1][2] == pytest.approx(res.inertia, rel=1e-6)
    assert all(b[2] <= a[2] * (1 + 1e-6) for a, b in zip(heard, heard[1:]))  # Lloyd never increases inertia
