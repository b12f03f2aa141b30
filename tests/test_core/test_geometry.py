"""geometry_metrics and w_metrics against analytic answers."""

from __future__ import annotations

import math

import pytest
import torch

from vqdoctor.core.geometry import geometry_metrics, w_metrics
from vqdoctor.errors import DataError


@pytest.mark.parametrize("r", [1, 3, 7])
def test_numerical_rank_of_a_rank_r_codebook(r: int) -> None:
    g = torch.Generator().manual_seed(r)
    codes = torch.randn(300, r, generator=g) @ torch.randn(r, 32, generator=g) + 5.0
    m = geometry_metrics(codes, metric="euclidean")
    assert m.numerical_rank == r  # the +5 offset is removed by centring
    assert len(m.singular_values) == 32
    assert m.singular_values == sorted(m.singular_values, reverse=True)


def test_effective_rank_of_a_flat_spectrum_is_d() -> None:
    d = 8
    # centred rows +-e_i: every singular value equal
    codes = torch.cat([torch.eye(d), -torch.eye(d)])
    m = geometry_metrics(codes, metric="euclidean")
    assert m.numerical_rank == d
    assert m.effective_rank == pytest.approx(d, rel=1e-12)


def test_effective_rank_two_to_one() -> None:
    codes = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    m = geometry_metrics(codes, metric="euclidean")
    p = torch.tensor([2.0, 1.0], dtype=torch.float64) / 3  # s = 2*sqrt2 and sqrt2
    assert m.effective_rank == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-9)


def test_cosine_spectrum_uses_normalised_codes() -> None:
    g = torch.Generator().manual_seed(0)
    directions = torch.randn(50, 6, generator=g)
    scales = torch.rand(50, 1, generator=g) * 100 + 0.1
    a = geometry_metrics(directions * scales, metric="cosine")
    b = geometry_metrics(directions, metric="cosine")
    assert a.singular_values == pytest.approx(b.singular_values, rel=1e-5)


def test_planted_duplicates_are_found() -> None:
    g = torch.Generator().manual_seed(1)
    codes = torch.randn(400, 16, generator=g)
    codes[10] = codes[3]  # exact
    codes[11] = codes[3]  # exact: 3 pairs among {3, 10, 11}
    codes[200] = codes[100] + 1e-4  # near
    m = geometry_metrics(codes, metric="euclidean", duplicate_tolerance=0.01)
    assert m.near_duplicate_pairs == 4
    assert m.redundant_codes == 3  # 10 and 11 copy 3; 200 nearly copies 100
    assert m.duplicate_sample == 400
    assert m.median_nn_distance is not None and m.median_nn_distance > 1.0
    assert geometry_metrics(torch.randn(400, 16, generator=g), metric="euclidean").near_duplicate_pairs == 0


def test_collapsed_codebook_counts_exact_duplicates_and_keeps_a_scale() -> None:
    # nine dead codes decayed to the origin (as EMA codebooks do) and one live code
    codes = torch.zeros(10, 4)
    codes[0] = 1.0
    m = geometry_metrics(codes, metric="euclidean")
    assert m.median_nn_distance == pytest.approx(2.0)  # over codes that are not copies: only code 0
    assert m.near_duplicate_pairs == 9 * 8 // 2
    assert m.redundant_codes == 8  # nine copies of one code: eight are redundant
    assert m.numerical_rank == 1


def test_pairs_on_a_subsample_beyond_the_cap() -> None:
    codes = torch.zeros(50, 3)  # all identical: every sampled pair is a duplicate
    m = geometry_metrics(codes, metric="euclidean", max_codes_for_pairs=20, seed=3)
    assert m.near_duplicate_pairs == 20 * 19 // 2
    assert m.numerical_rank == 0 and m.effective_rank == 0.0


def test_codes_outside_support() -> None:
    g = torch.Generator().manual_seed(2)
    sample = torch.randn(2000, 4, generator=g)
    inside = torch.randn(30, 4, generator=g) * 0.5
    outside = torch.full((5, 4), 50.0)
    m = geometry_metrics(torch.cat([inside, outside]), metric="euclidean", sample=sample)
    assert m.codes_outside_support == 5
    assert m.support_radius is not None and 0.1 < m.support_radius < 5
    assert geometry_metrics(inside, metric="euclidean").codes_outside_support is None


def test_sample_dim_mismatch() -> None:
    with pytest.raises(DataError, match="dim=4"):
        geometry_metrics(torch.randn(5, 4), metric="euclidean", sample=torch.randn(9, 3))


def test_w_metrics_diag() -> None:
    w = torch.diag(torch.tensor([1.0, 1.0, 0.0, 0.0]))
    m = w_metrics(w, source="quantizer.w")
    assert m.rank == 2 and m.frobenius_norm == pytest.approx(math.sqrt(2))
    assert m.effective_rank == pytest.approx(2.0) and m.shape == (4, 4)
    assert m.singular_values == [1.0, 1.0, 0.0, 0.0] and m.source == "quantizer.w"


def test_w_metrics_rectangular_identity_like() -> None:
    m = w_metrics(torch.eye(6, 10) * 3.0, source="w")
    assert m.rank == 6 and m.effective_rank == pytest.approx(6.0)
    assert m.frobenius_norm == pytest.approx(3.0 * math.sqrt(6))
