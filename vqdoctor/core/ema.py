"""Code usage read from EMA bookkeeping buffers, without any data.

An EMA codebook keeps ``cluster_size`` (vector-quantize-pytorch, encodec) or ``cluster_usage``
(Moshi): a decayed count of the vectors assigned to each code per step. Its scale depends on the
batch size, so the batch-size-free rule compares each code's *share* with the uniform share:
a code is dead when ``u_k < relative_factor * sum(u) / K`` (Moshi's ``threshold_usage_ratio``,
0.1 by default, strict ``<`` as in its ``_check_expired_codes``). The absolute rule
``u_k < absolute_threshold`` is what vector-quantize-pytorch's ``threshold_ema_dead_code`` does.
"""

from __future__ import annotations

import math

import torch

from vqdoctor.core.codebook import EmaState
from vqdoctor.core.results import EmaMetrics
from vqdoctor.errors import DataError, UsageError


def ema_metrics(
    ema: EmaState,
    size: int,
    *,
    absolute_threshold: float = 1.0,
    relative_factor: float = 0.1,
) -> EmaMetrics:
    """Dead codes (relative and absolute rule) and perplexity of the usage buffer of ``ema``
    for a codebook of ``size`` codes. Numbers are None, with a ``note`` saying why, when the
    buffer is missing, is not a usage count, has negative or non-finite entries, or is all
    zeros (a freshly initialised codebook that never saw data)."""
    if size < 1:
        raise UsageError(f"codebook size must be >= 1, got {size}")
    if absolute_threshold < 0 or relative_factor < 0:
        raise UsageError(
            f"thresholds must be >= 0, got absolute={absolute_threshold}, relative={relative_factor}"
        )
    buf = ema.cluster_size
    source = ema.keys.get("cluster_size") or next(iter(ema.keys.values()), "")
    notes = [] if ema.note is None else [ema.note]
    if ema.initted is False:
        notes.append("the codebook's initialised flag is False: it never saw data")

    def unavailable(reason: str | None, total: float | None = None) -> EmaMetrics:
        if reason:
            notes.append(reason)
        return EmaMetrics(
            source=source,
            is_count=ema.is_count,
            total=total,
            dead_codes_relative=None,
            dead_codes_absolute=None,
            absolute_threshold=absolute_threshold,
            perplexity=None,
            normalized_perplexity=None,
            initted=ema.initted,
            note="; ".join(notes) or None,
        )

    if buf is None:
        return unavailable("no usage buffer")
    if not ema.is_count:
        return unavailable(None if ema.note else "the buffer is not a usage count")
    u = buf.detach().to(device="cpu", dtype=torch.float64).flatten()
    if u.shape[0] != size:
        raise DataError(
            f"usage buffer {source!r} has {u.shape[0]} entries but the codebook has {size} codes"
        )
    if not bool(torch.isfinite(u).all()) or bool((u < 0).any()):
        return unavailable("the buffer has negative or non-finite entries: not a usage count")
    total = float(u.sum())
    if total == 0.0:
        return unavailable(
            "the buffer is all zeros (fresh initialisation, never updated): no usage recorded",
            total=0.0,
        )
    p = u / total
    nz = p[p > 0]
    h = max(0.0, float(-(nz * nz.log()).sum()))
    perplexity = math.exp(h)
    return EmaMetrics(
        source=source,
        is_count=True,
        total=total,
        dead_codes_relative=int((u < relative_factor * total / size).sum()),
        dead_codes_absolute=int((u < absolute_threshold).sum()),
        absolute_threshold=absolute_threshold,
        perplexity=perplexity,
        normalized_perplexity=perplexity / size,
        initted=ema.initted,
        note="; ".join(notes) or None,
    )
