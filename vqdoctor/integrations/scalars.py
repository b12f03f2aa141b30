"""A report as the flat scalars a training logger takes: ``{"vqdoctor/<codebook>/<metric>": value}``.

Per codebook (those with a number only): ``utilization``, ``perplexity``,
``normalized_perplexity``, ``used_codes``, ``dead_codes``, ``quantization_mse``, ``relative_mse``
(usage of the recorded vectors); ``ema_dead_codes``, ``ema_normalized_perplexity`` (the EMA
buffer); ``rank``, ``effective_rank`` (the codes); ``w_rank``, ``w_effective_rank`` (SimVQ's W);
``collapse_status``: the worst verdict of the codebook-collapse checks, 0 ok, 1 warn, 2 fail
(``insufficient``: 0). Pure: no framework is imported here.
"""

from __future__ import annotations

from vqdoctor.report.schema import CodebookReport, Report
from vqdoctor.verdicts import FAMILIES

PREFIX = "vqdoctor"
_STATUS = {"ok": 0, "insufficient": 0, "warn": 1, "fail": 2}
_COLLAPSE = frozenset(c for family, checks in FAMILIES if family == "codebook collapse" for c in checks)


def codebook_scalars(cb: CodebookReport) -> dict[str, float]:
    """The numbers of one codebook, by metric name (see the module docstring)."""
    out: dict[str, float | int | None] = {}
    if cb.usage is not None:
        u = cb.usage
        out |= {"utilization": u.utilization, "perplexity": u.perplexity,
                "normalized_perplexity": u.normalized_perplexity, "used_codes": u.used_codes,
                "dead_codes": u.dead_codes, "quantization_mse": u.quantization_mse, "relative_mse": u.relative_mse}
    if cb.ema is not None:
        out |= {"ema_dead_codes": cb.ema.dead_codes_relative, "ema_normalized_perplexity": cb.ema.normalized_perplexity}
    if cb.geometry is not None:
        out |= {"rank": cb.geometry.numerical_rank, "effective_rank": cb.geometry.effective_rank}
    if cb.w is not None:
        out |= {"w_rank": cb.w.rank, "w_effective_rank": cb.w.effective_rank}
    return {k: float(v) for k, v in out.items() if v is not None}


def report_scalars(report: Report, *, prefix: str = PREFIX) -> dict[str, float]:
    """Every codebook's scalars under ``{prefix}/{codebook}/``, and its ``collapse_status``."""
    out: dict[str, float] = {}
    for cb in report.codebooks:
        for metric, value in codebook_scalars(cb).items():
            out[f"{prefix}/{cb.name}/{metric}"] = value
        statuses = [_STATUS[v.status] for v in report.verdicts if v.codebook == cb.name and v.check in _COLLAPSE]
        if statuses:
            out[f"{prefix}/{cb.name}/collapse_status"] = float(max(statuses))
    return out
