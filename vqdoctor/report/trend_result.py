"""The result of ``vqdoctor trend``, beside the :class:`~vqdoctor.report.schema.Report` each of its
rows is read from: one :class:`TrendRow` per codebook per checkpoint, in step order, and the
verdicts on how the numbers move. :mod:`vqdoctor.trend` computes it; :mod:`vqdoctor.report.trend_out`
renders it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "vqdoctor.trend/1"


@dataclass(frozen=True)
class TrendRow:
    """One codebook at one step. ``None``: does not apply (no data, no W, no EMA buffer, one mode)."""

    step: int
    checkpoint: str
    codebook: str
    size: int
    vectors: int | None
    utilization: float | None
    perplexity: float | None
    dead_codes: int | None
    dead_fraction: float | None
    quantization_mse: float | None
    ema_dead_codes: int | None
    ema_perplexity: float | None
    numerical_rank: int
    effective_rank: float
    w_rank: int | None
    w_effective_rank: float | None
    allocation_tv: float | None


@dataclass(frozen=True)
class TrendVerdict:
    codebook: str
    metric: str
    status: str  # "warn" | "fail"
    value: float  # relative fall (up metrics) or absolute rise (down metrics)
    threshold: float
    step: int  # the step after which it happened (the peak, or the lowest point)
    message: str


@dataclass(frozen=True)
class TrendPoint:
    step: int
    step_source: str  # "metadata: global_step" | "file name"
    path: str


@dataclass(frozen=True)
class Trend:
    checkpoints: list[TrendPoint]
    rows: list[TrendRow]
    verdicts: list[TrendVerdict]
    data: str  # where the vectors came from
    notes: list[str] = field(default_factory=list)

    @property
    def codebooks(self) -> list[str]:
        return list(dict.fromkeys(r.codebook for r in self.rows))

    def series(self, codebook: str, metric: str) -> list[tuple[int, float]]:
        """(step, value) of one codebook's metric, in step order, where it applies."""
        return [(r.step, float(getattr(r, metric))) for r in self.rows
                if r.codebook == codebook and getattr(r, metric) is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "data": self.data,
            "checkpoints": [asdict(p) for p in self.checkpoints],
            "rows": [asdict(r) for r in self.rows],
            "verdicts": [asdict(v) for v in self.verdicts],
            "notes": list(self.notes),
        }
