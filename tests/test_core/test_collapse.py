"""Tokens collapse and embeddings collapse: hand-computed values and planted ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqdoctor.core.assign import nearest_codes
from vqdoctor.core.collapse import DeadCodeParking, embeddings_collapse, tokens_collapse
from vqdoctor.core.modes import fit_modes
from vqdoctor.errors import DataError, UsageError

LABELS10 = [f"m{i}" for i in range(10)]


# ------------------------------------------------------------------ tokens collapse, by hand


def test_tokens_collapse_hand_computed():
    # 4 codes, 2 modes. code 0: mode 0 (3 vs 1); code 1: tie 2-2 -> mode 0; code 2: mode 1;
    # code 3: dead, parked near mode 1: reported apart, not part of the allocation.
    counts = torch.tensor([[3, 1], [2, 2], [0, 4], [0, 0]])
    r = tokens_collapse(
        counts, dead_code_modes=torch.tensor([-1, -1, -1, 1]), labels=["a", "b"], mode_source="labels"
    )
    # vectors: mode 0 = 5, mode 1 = 7 (N = 12); live codes: mode 0 = 2, mode 1 = 1
    a, b = r.per_mode
    assert (a.vectors, b.vectors, a.codes, b.codes) == (5, 7, 2, 1)
    assert a.data_share == pytest.approx(5 / 12) and b.data_share == pytest.approx(7 / 12)
    assert a.code_share == pytest.approx(2 / 3) and b.code_share == pytest.approx(1 / 3)
    assert a.ratio == pytest.approx((2 / 3) / (5 / 12)) and b.ratio == pytest.approx((1 / 3) / (7 / 12))
    assert r.allocation_tv == pytest.approx(0.5 * (abs(2 / 3 - 5 / 12) + abs(1 / 3 - 7 / 12)))
    assert (r.live_codes, r.dead_codes, r.dead_parked) == (3, 1, [0, 1])
    assert r.modes == 2 and r.mode_source == "labels"
    assert (a.label, b.label) == ("a", "b") and r.starved_ratio == 0.5
    # 12 vectors for 3 live codes (N95(1 code) = 1, 2 codes: 5): both modes can be judged
    assert r.insufficient_modes == [] and r.starved_modes == []


def test_dead_codes_never_move_the_allocation():
    counts = torch.tensor([[3, 1], [2, 2], [0, 4], [0, 0], [0, 0], [0, 0]])
    parked = tokens_collapse(counts, dead_code_modes=torch.tensor([-1, -1, -1, 0, 0, 0]), labels=["a", "b"], mode_source="l")
    unknown = tokens_collapse(counts, dead_code_modes=None, labels=["a", "b"], mode_source="l")
    assert parked.allocation_tv == unknown.allocation_tv
    assert [m.codes for m in parked.per_mode] == [m.codes for m in unknown.per_mode] == [2, 1]
    assert parked.dead_parked == [3, 0] and unknown.dead_parked is None and unknown.dead_codes == 3


def test_a_mode_with_too_few_vectors_is_not_judged_starved():
    # mode 1 sends 3 vectors: fewer than 5, so its low code share is not evidence of starvation
    counts = torch.zeros(20, 2, dtype=torch.int64)
    counts[:20, 0] = 50
    counts[0, 1] = 3
    r = tokens_collapse(counts, dead_code_modes=None, labels=["a", "b"], mode_source="l")
    assert r.per_mode[1].ratio < 0.5
    assert r.starved_modes == [] and r.insufficient_modes == [1]
    counts[0, 1], counts[1, 1] = 0, 300  # now 300 vectors on one code: judged, and starved
    counts[1, 0] = 0
    r = tokens_collapse(counts, dead_code_modes=None, labels=["a", "b"], mode_source="l")
    assert r.starved_modes == [1] and r.insufficient_modes == []


def test_tokens_collapse_starved_mode_and_mode_without_data():
    # 10 codes: 9 on mode 0, 1 on mode 1; data half/half; mode 2 has no data at all
    counts = torch.zeros(10, 3, dtype=torch.int64)
    counts[:9, 0] = 10
    counts[9, 1] = 90
    r = tokens_collapse(counts, dead_code_modes=None, labels=["x", "y", "z"], mode_source="s")
    assert r.starved_modes == [1]
    assert r.per_mode[1].ratio == pytest.approx(0.1 / 0.5)
    assert r.per_mode[2].ratio is None and r.per_mode[2].data_share == 0.0
    assert r.allocation_tv == pytest.approx(0.4)


def test_tokens_collapse_rejects_bad_input():
    with pytest.raises(UsageError):
        tokens_collapse(
            torch.ones(3, 2, dtype=torch.int64),
            dead_code_modes=None,
            labels=["a"],
            mode_source="labels",
        )
    with pytest.raises(DataError):
        tokens_collapse(
            torch.zeros(3, 2, dtype=torch.int64),
            dead_code_modes=None,
            labels=["a", "b"],
            mode_source="labels",
        )
    with pytest.raises(DataError):
        tokens_collapse(
            torch.ones(3, 2), dead_code_modes=None, labels=["a", "b"], mode_source="labels"
        )
    with pytest.raises(DataError):
        tokens_collapse(
            torch.tensor([[1, 0], [0, 0]]),
            dead_code_modes=torch.tensor([0, 5]),
            labels=["a", "b"],
            mode_source="labels",
        )


def _parking(codes, x, modes, *, batch, metric="euclidean"):
    """Stream x in batches as gather() does: counts first, then the parking update."""
    park = DeadCodeParking.empty(codes.shape[0])
    counts = torch.zeros(codes.shape[0], dtype=torch.int64)
    for s in range(0, x.shape[0], batch):
        xb, mb = x[s : s + batch], modes[s : s + batch]
        idx, _ = nearest_codes(xb, codes, metric=metric)
        counts.index_add_(0, idx, torch.ones_like(idx))
        park.update(codes, counts, xb, mb, metric=metric)
    return park, counts


def test_dead_code_parking_finds_the_nearest_of_all_vectors_whatever_the_batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 4, generator=g)
    modes = torch.randint(0, 5, (3000,), generator=g)
    codes = torch.cat([torch.randn(20, 4, generator=g), 6 + torch.rand(30, 4, generator=g)])  # 30 far away: dead
    ref = None
    for batch in (7, 256, 3000):
        park, counts = _parking(codes, x, modes, batch=batch)
        dead = counts == 0
        assert int(dead.sum()) >= 30
        d = torch.cdist(codes[dead], x) ** 2  # brute force over every vector
        assert park.mode[dead].tolist() == modes[d.argmin(1)].tolist()
        assert torch.allclose(park.best[dead], d.min(1).values, rtol=1e-4, atol=1e-4)
        ref = park.mode[dead].tolist() if ref is None else ref
        assert park.mode[dead].tolist() == ref
    # shards merge by minimum: two halves give the one-pass answer
    p1, c1 = _parking(codes, x[:1500], modes[:1500], batch=300)
    p2, c2 = _parking(codes, x[1500:], modes[1500:], batch=300)
    dead = (c1 + c2) == 0
    assert p1.merge(p2).mode[dead].tolist() == ref


# --------------------------------------------------------------- tokens collapse, end to end


def ten_modes(
    n: int, dim: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ten unit-variance Gaussian modes on a circle of radius 10 (+ extra dims): (x, y, centres)."""
    g = torch.Generator().manual_seed(seed)
    angle = torch.arange(10, dtype=torch.float32) * (2 * torch.pi / 10)
    centres = torch.zeros(10, dim)
    centres[:, 0], centres[:, 1] = 10 * angle.cos(), 10 * angle.sin()
    y = torch.randint(0, 10, (n,), generator=g)
    x = centres[y] + torch.randn(n, dim, generator=g)
    return x, y, centres


def accumulate_mode_counts(
    x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor, m: int, batch: int = 1000
) -> torch.Tensor:
    """What UsageStats does: stream batches, assign, add into a (K, M) int64 matrix."""
    k = codes.shape[0]
    counts = torch.zeros(k, m, dtype=torch.int64)
    for s in range(0, x.shape[0], batch):
        idx, _ = nearest_codes(x[s : s + batch], codes)
        counts.view(-1).index_put_(
            (idx * m + y[s : s + batch],), torch.ones_like(idx), accumulate=True
        )
    return counts


def run_tokens(codes: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    counts = accumulate_mode_counts(x, y, codes, 10)
    return tokens_collapse(counts, dead_code_modes=None, labels=LABELS10, mode_source="labels")


def test_codes_piled_on_one_mode_are_flagged():
    x, y, centres = ten_modes(20_000)
    g = torch.Generator().manual_seed(1)
    pile = centres[0] + 0.7 * torch.randn(100, 2, generator=g)  # 100 of 128 codes in mode 0
    rest = centres[torch.arange(28) % 10] + 0.7 * torch.randn(28, 2, generator=g)  # ~3 per mode
    r = run_tokens(torch.cat([pile, rest]), x, y)
    shares = {s.mode: s for s in r.per_mode}
    assert shares[0].codes == 103 and shares[0].ratio > 7
    assert r.starved_modes == list(range(1, 10))  # ~3/128 codes for ~1/10 of the data: ratio ~0.23
    assert r.allocation_tv > 0.65


def test_evenly_spread_codes_are_not_flagged():
    x, y, centres = ten_modes(20_000)
    g = torch.Generator().manual_seed(2)
    codes = centres[torch.arange(128) % 10] + 0.7 * torch.randn(128, 2, generator=g)
    r = run_tokens(codes, x, y)
    assert r.starved_modes == []
    assert r.allocation_tv < 0.05
    assert sum(s.codes for s in r.per_mode) == 128


def test_inferred_modes_find_the_same_pile():
    x, _, centres = ten_modes(20_000)
    model = fit_modes(x, seed=0)
    assert model.k == 10
    y = torch.cat([model.predict(x[s : s + 4096]) for s in range(0, x.shape[0], 4096)])
    g = torch.Generator().manual_seed(1)
    pile = centres[0] + 0.7 * torch.randn(100, 2, generator=g)
    rest = centres[torch.arange(28) % 10] + 0.7 * torch.randn(28, 2, generator=g)
    codes = torch.cat([pile, rest])
    counts = accumulate_mode_counts(x, y, codes, model.k)
    piled_mode = int(model.predict(centres[:1])[0])
    r = tokens_collapse(
        counts,
        dead_code_modes=None,
        labels=[str(i) for i in range(model.k)],
        mode_source="inferred: gmm-bic on latents",
    )
    assert r.per_mode[piled_mode].ratio > 7
    assert sorted(r.starved_modes) == sorted(set(range(10)) - {piled_mode})


# --------------------------------------------------------------------- embeddings collapse


def embedding_world(n: int = 3000, seed: int = 0):
    """Ten separated Gaussian modes in 8-D input space, and two encoders into 16-D latents:
    one merges pairs (0, 1) and (2, 3) (both send them to the pair's mean centre), the other is a
    random invertible linear map (keeps every mode apart)."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((10, 8))
    for i in range(10):
        centres[i, i % 8] = 8.0 if i < 8 else -8.0
    y = rng.integers(0, 10, n)
    noise = rng.normal(size=(n, 8))
    x = centres[y] + noise
    merged = centres.copy()
    merged[0] = merged[1] = (centres[0] + centres[1]) / 2
    merged[2] = merged[3] = (centres[2] + centres[3]) / 2
    lift = rng.normal(size=(8, 16)) / np.sqrt(8)
    lat_merge = (merged[y] + noise) @ lift + 0.1 * rng.normal(size=(n, 16))
    a = rng.normal(size=(8, 8)) + 3 * np.eye(8)  # invertible
    lat_keep = x @ a
    t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    return t(x), torch.tensor(y), t(lat_merge), t(lat_keep)


def test_merging_encoder_gives_exactly_the_merged_pairs_with_labels():
    x, y, lat_merge, _ = embedding_world()
    r = embeddings_collapse(lat_merge, y, inputs=x, labels=LABELS10, mode_source="labels")
    assert {(p.a, p.b) for p in r.merged_pairs} == {(0, 1), (2, 3)}
    for p in r.merged_pairs:
        assert p.latent_overlap > 0.8 and p.input_overlap is not None and p.input_overlap < 0.05
        assert (p.label_a, p.label_b) == (f"m{p.a}", f"m{p.b}")
    assert r.input_modes == 10 and r.embedding_modes == 8
    assert r.input_knn_purity > 0.99 and r.latent_knn_purity < 0.85
    assert r.subsample == 3000 and r.mode_source == "labels" and r.labels == LABELS10


def test_encoder_that_keeps_modes_apart_gives_no_pairs():
    x, y, _, lat_keep = embedding_world()
    r = embeddings_collapse(lat_keep, y, inputs=x, labels=LABELS10, mode_source="labels")
    assert r.merged_pairs == []
    assert r.input_modes == 10 and r.embedding_modes == 10
    assert r.latent_knn_purity > 0.99


def test_merged_pairs_with_inferred_modes():
    x, _, lat_merge, lat_keep = embedding_world()
    model = fit_modes(x, seed=0)
    assert model.k == 10
    y = model.predict(x)
    labels = [f"cluster {i}" for i in range(model.k)]
    r = embeddings_collapse(
        lat_merge, y, inputs=x, labels=labels, mode_source="inferred: gmm-bic on inputs"
    )
    # the inferred ids are a permutation of the planted ones
    centres = torch.zeros(4, 8)
    centres[0, 0], centres[1, 1], centres[2, 2], centres[3, 3] = 8.0, 8.0, 8.0, 8.0
    ids = model.predict(centres).tolist()
    want = {tuple(sorted((ids[0], ids[1]))), tuple(sorted((ids[2], ids[3])))}
    assert {(p.a, p.b) for p in r.merged_pairs} == want
    keep = embeddings_collapse(lat_keep, y, inputs=x, labels=labels, mode_source="inferred")
    assert keep.merged_pairs == []


def test_latents_only_list_no_merged_pairs():
    # without inputs a latent overlap cannot tell merged modes from modes that were never apart
    x, y, lat_merge, _ = embedding_world()
    r = embeddings_collapse(lat_merge, y, inputs=None, labels=LABELS10, mode_source="labels")
    assert r.merged_pairs == []
    assert r.input_modes is None and r.input_knn_purity is None
    assert r.latent_knn_purity < 0.9  # the latent side is still measured
    with_inputs = embeddings_collapse(lat_merge, y, inputs=x, labels=LABELS10, mode_source="labels")
    assert {(p.a, p.b) for p in with_inputs.merged_pairs} == {(0, 1), (2, 3)}


def test_subsample_bounds_the_work_and_keeps_every_mode():
    x, y, lat_merge, _ = embedding_world(n=6000)
    r = embeddings_collapse(
        lat_merge, y, inputs=x, labels=LABELS10, mode_source="labels", subsample=1500
    )
    assert r.subsample == 1500
    assert {(p.a, p.b) for p in r.merged_pairs} == {(0, 1), (2, 3)}


def test_embeddings_collapse_bad_input():
    x, y, lat, _ = embedding_world(n=200)
    with pytest.raises(DataError):
        embeddings_collapse(lat, y[:10], inputs=None, labels=LABELS10, mode_source="labels")
    with pytest.raises(DataError):
        embeddings_collapse(lat, y, inputs=x[:10], labels=LABELS10, mode_source="labels")
    with pytest.raises(DataError):
        embeddings_collapse(lat, y, inputs=None, labels=LABELS10[:3], mode_source="labels")
