"""What a perfect codebook reaches with N vectors: the yardstick for sample-size-aware verdicts.

A *perfect* codebook of K codes is one whose every code is equally likely: N vectors are N
independent uniform draws over the K codes, so code k receives c_k ~ Binomial(N, 1/K) vectors.
With few vectors per code even this codebook leaves codes unused, and a measured utilization of
45% at N = 0.6 K is exactly what it would show. The report gives these expectations beside the
measured values and the verdicts judge the measured value *relative* to them
(``docs/verdicts.md``, "Sample size").

Closed forms, no simulation (deterministic, no seed):

- expected used codes  K (1 - (1 - 1/K)^N);
- expected live codes at ``min_count`` m:  K P(c >= m), the binomial tail summed exactly;
- expected perplexity  exp(E[H]), E[H] = -K sum_{c >= 1} P(c) (c/N) ln(c/N), the expected plug-in
  entropy of the uniform sample, summed over the binomial's support within 12 standard deviations of
  its mean (the rest weighs < 1e-30). Above 10^4 draws per code the Miller-Madow expansion
  E[H] = ln K - (K - 1) / (2N) is used (its error there is below 1e-9 relative);
- vectors needed for a share s of codes used:  N_s = ceil(ln(1 - s) / ln(1 - 1/K)) (about K ln 20 = 3 K
  for 95%, K ln 100 = 4.6 K for 99%).
"""

from __future__ import annotations

import math

import numpy as np

_MM_DRAWS_PER_CODE = 1e4  # above this, E[H] by the Miller-Madow expansion
_SD_SPAN = 12.0


def expected_used(k: int, n: int) -> float:
    """Expected number of codes a perfect codebook of ``k`` codes uses at least once in ``n`` draws."""
    if k <= 1:
        return float(min(k, n))
    return -k * math.expm1(n * math.log1p(-1.0 / k))


def expected_live(k: int, n: int, min_count: int) -> float:
    """Expected number of codes a perfect codebook gives at least ``min_count`` of ``n`` draws."""
    if min_count <= 0:
        return float(k)
    if min_count == 1:
        return expected_used(k, n)
    if n < min_count:
        return 0.0
    c = np.arange(min_count)
    return float(k * max(0.0, 1.0 - np.exp(_log_pmf(c, n, 1.0 / k)).sum()))


def expected_perplexity(k: int, n: int) -> float:
    """exp of the expected plug-in entropy of ``n`` uniform draws over ``k`` codes (module doc)."""
    if k <= 1 or n <= 1:
        return 1.0
    if n / k >= _MM_DRAWS_PER_CODE:
        return math.exp(math.log(k) - (k - 1) / (2.0 * n))
    p = 1.0 / k
    mean, sd = n * p, math.sqrt(n * p * (1.0 - p))
    lo = max(1, int(math.floor(mean - _SD_SPAN * sd)))
    hi = min(n, int(math.ceil(mean + _SD_SPAN * sd)) + 16)
    c = np.arange(lo, hi + 1, dtype=np.float64)
    q = c / n
    h = -k * float((np.exp(_log_pmf(c, n, p)) * q * np.log(q)).sum())
    return math.exp(min(max(h, 0.0), math.log(k)))


def vectors_needed(k: int, share: float) -> int:
    """Smallest N at which a perfect codebook of ``k`` codes is expected to use ``share`` of them."""
    if k <= 1:
        return 1
    return int(math.ceil(math.log1p(-share) / math.log1p(-1.0 / k)))


def _log_pmf(c: np.ndarray, n: int, p: float) -> np.ndarray:
    """log Binomial(n, p) probability of each count in ``c``."""
    c = np.asarray(c, dtype=np.float64)
    lg = np.vectorize(math.lgamma)
    return (math.lgamma(n + 1) - lg(c + 1) - lg(n - c + 1) + c * math.log(p) + (n - c) * math.log1p(-p))


__all__ = ["expected_live", "expected_perplexity", "expected_used", "vectors_needed"]
