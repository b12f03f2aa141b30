"""How a codebook compares vectors (euclidean or cosine), decided from the evidence a layout has.

Evidence, strongest first:
- the layout itself, where it has only one lookup rule (DAC and BEiT-v2's NormEMA: cosine);
- the checkpoint's config, where a layout keeps the switch there (``use_cosine_sim``,
  LlamaGen's ``codebook_l2_norm``, GLM-Image's model type);
- the EMA buffers of vector-quantize-pytorch: its ``update_ema`` writes
  ``embed = embed_avg / laplace(cluster_size)``, l2-normalised by the cosine codebook, so a table
  equal to the *normalised* EMA mean while that mean is not unit-norm is a cosine codebook;
- the codes: every row unit-norm within ``max(1e-3, eps of the stored dtype)`` (1e-3 for float32
  and float16, 7.8e-3 for bfloat16, whose rounding alone moves a norm by up to 3.9e-3).

Unit-norm codes are the weakest evidence: a euclidean quantizer whose codes happen to be unit-norm
looks the same. Assignments agree for unit-norm codes (||x - c||^2 = ||x||^2 + 1 - 2 x.c), so only
the quantization error (measured on normalised latents) and the fixes (spherical k-means) differ;
where nothing but the codes says cosine, the call carries a warning that names ``--metric``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vqdoctor.codebooks.detectors._util import config_values, is_zero
from vqdoctor.core.codebook import Metric, MetricSource

UNIT_TOL = 1e-3  # a row is unit-norm when | ||c|| - 1 | < max(UNIT_TOL, eps of the stored dtype)
VQP_EPS = 1e-5  # vector-quantize-pytorch's default laplace-smoothing eps
_INFORMATIVE = 0.05  # an EMA mean this far from unit norm tells the two update rules apart
_AGREE = 0.9  # share of informative rows that must follow one rule

AMBIGUOUS = ("Only the codes say cosine: a euclidean quantizer whose codes happen to be unit-norm looks the same. "
             "Both metrics give the same assignments for unit-norm codes; the quantization MSE and the fixes "
             "differ, so pass --metric euclidean if this quantizer compares un-normalised latents.")

UNIT_BUT_EUCLIDEAN = ("The codes are unit-norm although this layout compares by squared L2: pass --metric cosine "
                      "if your fork normalises the lookup.")
WARNINGS = (AMBIGUOUS, UNIT_BUT_EUCLIDEAN)  # moot once the user says --metric


@dataclass(frozen=True)
class MetricCall:
    """The metric a detector settled on, where it came from and the evidence, in words."""

    metric: Metric
    source: MetricSource
    evidence: str
    warning: str | None = None


def unit_tolerance(dtype: torch.dtype | None) -> float:
    if dtype is None or not dtype.is_floating_point:
        return UNIT_TOL
    return max(UNIT_TOL, float(torch.finfo(dtype).eps))


def fmt_tol(tol: float) -> str:
    """``1e-3``, ``7.8e-3``: the tolerance as the evidence strings print it."""
    mantissa, exponent = f"{tol:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def norm_evidence(codes: torch.Tensor, *, tol: float) -> tuple[bool, str]:  # codes: (K, d)
    """(all rows unit-norm, the evidence in words)."""
    k = int(codes.shape[0])
    if codes.numel() == 0 or is_zero(codes):
        return False, "all codes are zero (not initialised)"
    norms = codes.norm(dim=1)
    off = int(((norms - 1).abs() >= tol).sum())
    if off == 0:
        return True, f"all {k} codes unit-norm ±{fmt_tol(tol)}"
    return False, (f"{off} of {k} codes not unit-norm ±{fmt_tol(tol)} "
                   f"(norms {float(norms.min()):.3g}–{float(norms.max()):.3g})")


def from_codes(codes: torch.Tensor, *, dtype: torch.dtype | None, warn: bool) -> MetricCall:
    """Cosine when every row is unit-norm; ``warn`` where the layout has no other evidence."""
    unit, evidence = norm_evidence(codes, tol=unit_tolerance(dtype))
    if unit:
        return MetricCall("cosine", "detected", evidence, AMBIGUOUS if warn else None)
    return MetricCall("euclidean", "detected", evidence)


def from_config(config: Mapping[str, Any] | None, names: tuple[str, ...]) -> MetricCall | None:
    """The first boolean switch among ``names`` found anywhere in the config."""
    for name in names:
        values = [v for v in config_values(config, name) if isinstance(v, (bool, int))]
        if values:
            on = bool(values[0])
            return MetricCall("cosine" if on else "euclidean", "config", f"{name}={on} in the checkpoint's config")
    return None


def from_vqp_ema(
    codes: torch.Tensor,  # (K, d) the stored table
    embed_avg: torch.Tensor | None,  # (K, d)
    cluster_size: torch.Tensor | None,  # (K,)
    *,
    dtype: torch.dtype | None,
) -> MetricCall | None:
    """vector-quantize-pytorch's EMA rule read backwards (None when the buffers cannot tell)."""
    if embed_avg is None or cluster_size is None or embed_avg.shape != codes.shape:
        return None
    cs = cluster_size.to(torch.float64)
    total = cs.sum()
    if not bool(torch.isfinite(total)) or float(total) <= 0:
        return None
    k = cs.shape[0]
    smoothed = (cs + VQP_EPS) / (total + k * VQP_EPS) * total  # (K,)
    mean = embed_avg.to(torch.float64) / smoothed[:, None]  # (K, d)
    mean_norm = mean.norm(dim=1)
    informative = ((mean_norm - 1).abs() > _INFORMATIVE) & (mean_norm > 1e-6) & torch.isfinite(mean_norm)
    n_inf = int(informative.sum())
    if n_inf == 0:
        return None
    tol = 4 * unit_tolerance(dtype)
    c = codes.to(torch.float64)[informative]
    m = mean[informative]
    cos_rule = int(((c - torch.nn.functional.normalize(m, dim=1)).norm(dim=1) < tol).sum())
    euc_rule = int(((c - m).norm(dim=1) < tol * m.norm(dim=1).clamp_min(1)).sum())
    where = f"of the {n_inf} codes whose EMA mean is not unit-norm"
    if cos_rule >= _AGREE * n_inf:
        return MetricCall("cosine", "detected", f"EMA buffers: embed = l2norm(embed_avg / cluster_size) for {cos_rule} {where}")
    if euc_rule >= _AGREE * n_inf:
        return MetricCall("euclidean", "detected", f"EMA buffers: embed = embed_avg / cluster_size for {euc_rule} {where}")
    return None


def with_codes(call: MetricCall, codes: torch.Tensor, *, dtype: torch.dtype | None) -> MetricCall:
    """``call`` (from the layout, config or buffers) with the codes' norm evidence appended."""
    _, norms = norm_evidence(codes, tol=unit_tolerance(dtype))
    return MetricCall(call.metric, call.source, f"{call.evidence}; {norms}", call.warning)

