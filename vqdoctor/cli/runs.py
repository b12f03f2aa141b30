"""The analysis of `inspect` / `check` with a progress bar: the run mode (one process, a shard,
a torchrun rank) is decided by :func:`vqdoctor.api.analyse`; this only shows progress and says
where the statistics went."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from vqdoctor import api
from vqdoctor.cli.progress import stage_progress
from vqdoctor.options import AnalysisOptions, DataOptions
from vqdoctor.report.schema import Report


def analyse(path: Path, *, data: DataOptions, analysis: AnalysisOptions, err: Console,
            save_stats: Path | None = None, want_report: bool = True) -> Report | None:
    """The report to render, or None where there is nothing more to show (statistics only, or a
    rank other than 0 under torchrun)."""
    shown = err if api.is_main_process() else Console(stderr=True, quiet=True)
    with stage_progress(shown):  # the analysis announces its stages and counts (vqdoctor.stages)
        result = api.analyse(path, data=data, analysis=analysis, save_stats=save_stats, want_report=want_report)
    if result.saved is not None and result.statistics is not None:
        stats = result.statistics
        err.print(f"Statistics of {stats.describe_shards()} ({stats.gathered.vectors:,} vectors) written to {result.saved}")
    return result.report
