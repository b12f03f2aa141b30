"""What a perfect codebook reaches with N vectors: closed forms against exact small cases and a
seeded multinomial simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vqdoctor.core.expect import expected_live, expected_perplexity, expected_used, vectors_needed


def test_expected_used_closed_form():
    assert expected_used(2, 1) == pytest.approx(1.0)
    assert expected_used(2, 2) == pytest.approx(1.5)  # both draws on one code with probability 1/2
    assert expected_used(16384, 10_000) / 16384 == pytest.approx(1 - (1 - 1 / 16384) ** 10_000)
    assert expected_used(1, 5) == 1.0 and expected_used(7, 0) == 0.0


def test_expected_live_is_the_binomial_tail():
    k, n = 10, 20  # P(c >= 2) for c ~ Binomial(20, 0.1)
    p0, p1 = 0.9**20, 20 * 0.1 * 0.9**19
    assert expected_live(k, n, 2) == pytest.approx(k * (1 - p0 - p1))
    assert expected_live(k, n, 1) == pytest.approx(expected_used(k, n))
    assert expected_live(k, n, 0) == k and expected_live(k, 1, 2) == 0.0


def test_expected_perplexity_matches_a_seeded_simulation():
    rng = np.random.default_rng(0)
    for k, n in [(100, 60), (4096, 10_000), (64, 7188)]:
        c = rng.multinomial(n, np.full(k, 1 / k), size=5000 if k < 1000 else 100)  # (reps, K)
        p = c / n
        h = -(p * np.log(np.where(c > 0, p, 1.0))).sum(1)  # 0 ln 0 = 0
        assert expected_perplexity(k, n) == pytest.approx(math.exp(h.mean()), rel=2e-3)
    assert expected_perplexity(4, 10**9) == pytest.approx(4.0, rel=1e-8)  # Miller-Madow branch
    assert expected_perplexity(1, 100) == 1.0


def test_vectors_needed_for_a_share_of_codes():
    n95 = vectors_needed(4096, 0.95)
    assert expected_used(4096, n95) / 4096 >= 0.95 > expected_used(4096, n95 - 1) / 4096
    assert n95 == pytest.approx(4096 * math.log(20), rel=1e-3)
    assert vectors_needed(4096, 0.99) == pytest.approx(4096 * math.log(100), rel=1e-3)
