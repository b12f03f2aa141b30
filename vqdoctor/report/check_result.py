"""The result of ``vqdoctor check``, beside the :class:`~vqdoctor.report.schema.Report` it judges:
one :class:`CheckItem` per check per codebook, the :class:`CheckResult` that gathers them and decides
the exit code, and the ``vqdoctor.check/1`` document. :mod:`vqdoctor.check` computes them; the
renderers (terminal, JSON, JUnit) read them and import nothing above ``report/``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

CHECK_SCHEMA = "vqdoctor.check/1"
Outcome = Literal["pass", "fail", "skipped", "insufficient"]  # insufficient: not enough data to judge
Kind = Literal["threshold", "baseline"]
Direction = Literal["min", "max"]


class Bounds(Protocol):
    """The bounds a check applied (:class:`vqdoctor.check.Thresholds`), as JSON."""

    def to_dict(self) -> dict[str, float | int | None]: ...


@dataclass(frozen=True)
class CheckItem:
    check: str  # "utilization", ..., "merged_pairs", or "codebook" (a codebook missing vs the baseline)
    codebook: str | None  # None for model-wide checks
    kind: Kind  # "threshold": against a bound; "baseline": against the baseline report
    outcome: Outcome
    value: float | None  # this run's value
    threshold: float | None  # the bound that was applied (for baseline items: the tolerated value)
    baseline: float | None  # the baseline's value (baseline items only)
    message: str  # one line: why
    remedy: str | None  # the command to run, on failure (shell-quoted), or why there is none
    percent: bool = False  # show the values as percentages (display only, not in JSON)
    remedy_argv: tuple[str, ...] | None = None  # the remedy command as an argv list
    direction: Direction | None = None  # "min": the value must stay above the bound (display only, not in JSON)

    @property
    def name(self) -> str:
        """The test-case name: ``utilization`` or ``utilization vs baseline``."""
        return self.check if self.kind == "threshold" else f"{self.check} vs baseline"

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check, "codebook": self.codebook, "kind": self.kind, "outcome": self.outcome,
            "value": _finite(self.value), "threshold": _finite(self.threshold), "baseline": _finite(self.baseline),
            "message": self.message, "remedy": self.remedy,
            "remedy_argv": None if self.remedy_argv is None else list(self.remedy_argv),
        }  # fmt: skip


@dataclass(frozen=True)
class CheckResult:
    items: list[CheckItem]
    thresholds: Bounds  # the bounds that were applied (a vqdoctor.check.Thresholds)
    threshold_source: str  # "defaults (fail bounds of docs/verdicts.md)" or where they came from
    strict: bool
    baseline: str | None  # the baseline's description (path), when one was compared
    max_regression: float | None

    @property
    def failed(self) -> list[CheckItem]:
        return [i for i in self.items if i.outcome == "fail"]

    @property
    def skipped(self) -> list[CheckItem]:
        return [i for i in self.items if i.outcome == "skipped"]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        """0 when every check passed (or was skipped, without --strict), 1 when one failed."""
        return 0 if self.passed else 1

    def summary(self) -> dict[str, int]:
        return {o: sum(1 for i in self.items if i.outcome == o) for o in ("pass", "fail", "skipped", "insufficient")}

    def to_dict(self) -> dict[str, Any]:
        """The ``check`` part of the ``vqdoctor.check/1`` document (see :func:`check_document`)."""
        return {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "strict": self.strict,
            "thresholds": self.thresholds.to_dict(),
            "threshold_source": self.threshold_source,
            "baseline": None if self.baseline is None else {"source": self.baseline, "max_regression": self.max_regression},
            "summary": self.summary(),
            "results": [i.to_dict() for i in self.items],
        }


def check_document(result: CheckResult, report_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The ``vqdoctor.check/1`` JSON document: the check results plus the full ``vqdoctor.report/1``
    under ``report`` (so the file can serve as the next run's ``--baseline``)."""
    return {"schema": CHECK_SCHEMA, **result.to_dict(), "report": dict(report_dict)}


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)
