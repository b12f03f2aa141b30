"""``[tool.vqdoctor.check]`` for the commands that render verdicts (inspect, merge): the fail
bounds it configures judge the report too, so ``inspect`` and ``check`` agree on what fails.
Found as ``check`` finds it (the nearest pyproject.toml upward from here); flags of ``check``
do not apply here, the documented defaults apply where the table sets nothing."""

from __future__ import annotations

from pathlib import Path

from vqdoctor.check import config_from_mapping, verdict_checks
from vqdoctor.io.config import load_check_config
from vqdoctor.remedies import RemedyContext
from vqdoctor.report.schema import Report
from vqdoctor.verdicts import rejudged


def with_config_bounds(report: Report, *, data_args: tuple[str, ...] = (), start: Path | None = None,
                       remedy: RemedyContext | None = None) -> Report:
    """``report`` judged with the configured fail bounds; unchanged when none are configured.
    ``remedy``: how fix commands are written (default: the report's checkpoint with ``data_args``)."""
    table = load_check_config(None, start=Path.cwd() if start is None else start)
    if table is None:
        return report
    limits = config_from_mapping(table.values, source=table.source, base_dir=table.path.parent).thresholds
    if limits.is_empty():
        return report
    checks, pairs = verdict_checks(limits)
    c = report.checkpoint
    remedy = remedy or RemedyContext(c.path, c.format, data_args, has_data=report.data.vectors is not None)
    return rejudged(report, checks=checks, merged_pairs_fail=pairs, remedy=remedy, source=table.source)
