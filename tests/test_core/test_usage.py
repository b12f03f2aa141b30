"""UsageStats: analytic metrics, exact merges in any order, round trip, distributed sum."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from vqdoctor.core.usage import UsageStats
from vqdoctor.errors import DataError, UsageError


def _stats(idx: list[int], k: int, d: int = 2, modes: list[int] | None = None) -> UsageStats:
    s = UsageStats.empty(k, d, modes=None if modes is None else max(modes) + 1)
    n = len(idx)
    x = torch.arange(n * d, dtype=torch.float32).view(n, d)
    m = None if modes is None else torch.tensor(modes)
    s.update(torch.tensor(idx), torch.ones(n), x, m)
    return s


def test_uniform_usage_has_perplexity_k() -> None:
    k = 16
    m = _stats(list(range(k)) * 5, k).compute()
    assert m.perplexity == pytest.approx(k, rel=1e-12)
    assert m.normalized_perplexity == pytest.approx(1.0, rel=1e-12)
    assert m.entropy_bits == pytest.approx(4.0, rel=1e-12)
    assert m.utilization == 1.0 and m.used_codes == k and m.dead_codes == 0
    assert m.top1_mass == pytest.approx(1 / k)
    assert m.top10pct_mass == pytest.approx(2 / k)  # ceil(1.6) = 2 codes


def test_one_code_has_perplexity_one() -> None:
    m = _stats([3] * 50, 10).compute()
    assert m.perplexity == 1.0 and m.entropy_bits == 0.0
    assert m.used_codes == 1 and m.dead_codes == 9 and m.utilization == pytest.approx(0.1)
    assert m.top1_mass == 1.0 and m.top10pct_mass == 1.0


def test_known_dead_codes_and_min_count() -> None:
    # counts: code0=4, code1=2, code2=1, code3..4=0
    s = _stats([0, 0, 0, 0, 1, 1, 2], 5)
    m1 = s.compute()
    assert (m1.used_codes, m1.dead_codes, m1.utilization) == (3, 2, 0.6)
    m3 = s.compute(min_count=3)
    assert m3.dead_codes == 4 and m3.min_count == 3
    assert m3.utilization == 0.6  # utilization ignores min_count
    p = torch.tensor([4, 2, 1], dtype=torch.float64) / 7
    h = float(-(p * p.log()).sum())
    assert m1.perplexity == pytest.approx(math.exp(h), rel=1e-12)
    assert m1.top1_mass == pytest.approx(4 / 7) and m1.top10pct_mass == pytest.approx(4 / 7)


def test_mse_and_relative_mse() -> None:
    s = UsageStats.empty(3, 2)
    x = torch.tensor([[0.0, 0.0], [2.0, 4.0]])  # per-dim variances 1 and 4: mean 2.5
    s.update(torch.tensor([0, 1]), torch.tensor([1.0, 3.0]), x)
    m = s.compute(space="raw")
    assert m.quantization_mse == pytest.approx(1.0)  # 4 / (2 vectors * 2 elements)
    assert m.relative_mse == pytest.approx(1.0 / 2.5)
    assert m.space == "raw" and m.vectors == 2


def test_relative_mse_none_without_variance() -> None:
    s = UsageStats.empty(3, 2)
    s.update(torch.tensor([0, 0, 0]), torch.zeros(3), torch.full((3, 2), 0.1))
    assert s.compute().relative_mse is None


def test_cosine_stats_normalise_vectors() -> None:
    s = UsageStats.empty(2, 2, metric="cosine")
    s.update(torch.tensor([0, 0]), torch.zeros(2), torch.tensor([[3.0, 0.0], [5.0, 0.0]]))
    assert s.x_sum.tolist() == [2.0, 0.0]


def test_merge_in_any_order_equals_one_pass() -> None:
    g = torch.Generator().manual_seed(0)
    k, d, m, n = 50, 4, 3, 3000
    idx = torch.randint(0, k, (n,), generator=g)
    sq = torch.rand(n, generator=g)
    x = torch.randn(n, d, generator=g)
    modes = torch.randint(0, m, (n,), generator=g)
    whole = UsageStats.empty(k, d, modes=m)
    whole.update(idx, sq, x, modes)
    cuts = [0, 700, 701, 1900, 3000]
    shards = []
    for a, b in itertools.pairwise(cuts):
        s = UsageStats.empty(k, d, modes=m)
        s.update(idx[a:b], sq[a:b], x[a:b], modes[a:b])
        shards.append(s)
    for perm in itertools.permutations(shards):
        merged = perm[0]
        for s in perm[1:]:
            merged = merged.merge(s)
        assert torch.equal(merged.counts, whole.counts)
        assert torch.equal(merged.mode_counts, whole.mode_counts)
        assert (merged.vectors, merged.elements) == (n, n * d)
        torch.testing.assert_close(merged.sq_err_sum, whole.sq_err_sum, rtol=1e-12, atol=0)
        torch.testing.assert_close(merged.x_sum, whole.x_sum, rtol=1e-10, atol=1e-10)
        assert _close(merged, whole)
    assert shards[0].vectors == 700  # merge does not modify its inputs


def _close(a: UsageStats, b: UsageStats) -> bool:
    ma, mb = a.compute(), b.compute()
    return all(
        getattr(ma, f) == pytest.approx(getattr(mb, f), rel=1e-9)
        for f in ("perplexity", "quantization_mse", "relative_mse", "top1_mass", "utilization")
    )


def test_merge_refuses_other_codebooks() -> None:
    with pytest.raises(DataError, match="different codebooks"):
        UsageStats.empty(4, 2).merge(UsageStats.empty(5, 2))
    with pytest.raises(DataError):
        UsageStats.empty(4, 2, modes=2).merge(UsageStats.empty(4, 2))
    with pytest.raises(DataError):
        UsageStats.empty(4, 2).merge(UsageStats.empty(4, 2, metric="cosine"))


def test_dict_round_trip_is_exact() -> None:
    g = torch.Generator().manual_seed(1)
    s = UsageStats.empty(7, 3, modes=2)
    s.update(
        torch.randint(0, 7, (100,), generator=g),
        torch.rand(100, generator=g),
        torch.randn(100, 3, generator=g),
        torch.randint(0, 2, (100,), generator=g),
    )
    s.counts[0] += 2**40  # exact beyond float precision
    s.vectors += 2**40
    s.elements += 3 * 2**40
    back = UsageStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert torch.equal(back.counts, s.counts) and torch.equal(back.mode_counts, s.mode_counts)
    assert torch.equal(back.x_sum, s.x_sum) and torch.equal(back.x_sq_sum, s.x_sq_sum)
    assert float(back.sq_err_sum) == float(s.sq_err_sum)
    assert (back.vectors, back.elements, back.metric) == (s.vectors, s.elements, s.metric)
    assert back.compute() == s.compute()


def test_from_dict_rejects_garbage() -> None:
    with pytest.raises(DataError):
        UsageStats.from_dict({"format": "something else"})
    d = UsageStats.empty(3, 2).to_dict()
    d["counts"] = [1, 2]
    with pytest.raises(DataError, match="inconsistent"):
        UsageStats.from_dict(d)
    del d["x_sum"]
    with pytest.raises(DataError):
        UsageStats.from_dict(d)


def test_bad_updates_and_empty() -> None:
    s = UsageStats.empty(3, 2)
    with pytest.raises(DataError):
        s.update(torch.tensor([0, 3]), torch.zeros(2), torch.zeros(2, 2))
    with pytest.raises(DataError):
        s.update(torch.tensor([0, 1]), torch.zeros(2), torch.zeros(2, 3))
    with pytest.raises(UsageError):
        s.update(torch.tensor([0]), torch.zeros(1), torch.zeros(1, 2), torch.tensor([0]))
    with pytest.raises(DataError, match="no vectors"):
        s.compute()
    s.update(torch.zeros(0, dtype=torch.int64), torch.zeros(0), torch.zeros(0, 2))
    assert s.vectors == 0


def test_all_reduce_single_process_group(tmp_path) -> None:
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    s = _stats([0, 1, 1], 3)
    before = s.to_dict()
    assert s.all_reduce() is s and s.to_dict() == before  # no group: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        s.all_reduce()
        assert s.to_dict() == before
    finally:
        dist.destroy_process_group()
