"""Running the analysis for a command: in one process, on a shard (--shard, --save-stats), or
under torchrun (every rank reads its slice; statistics are reduced; rank 0 reports)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from vqdoctor import api, distributed
from vqdoctor.cli.progress import stage_progress
from vqdoctor.core.device import pick_device
from vqdoctor.errors import UsageError
from vqdoctor.options import AnalysisOptions, DataOptions
from vqdoctor.report.schema import Report


def analyse(path: Path, *, data: DataOptions, analysis: AnalysisOptions, err: Console,
            save_stats: Path | None = None, want_report: bool = True) -> Report | None:
    """The report to render, or None where there is nothing more to show (statistics only, or a
    rank other than 0 under torchrun)."""
    if save_stats is None and data.shard is None and distributed.detect() is None:
        with stage_progress(err):  # the analysis announces its stages and counts (vqdoctor.stages)
            return api.inspect(path, data=data, analysis=analysis)
    return _sharded(path, data=data, analysis=analysis, save_stats=save_stats, want_report=want_report, err=err)


def _sharded(path: Path, *, data: DataOptions, analysis: AnalysisOptions, save_stats: Path | None, want_report: bool,
             err: Console) -> Report | None:
    """Statistics of a shard (--shard), or of every rank reduced (under torchrun); saved with
    --save-stats. Returns the report to render, or None where there is nothing more to show
    (statistics only, or a rank other than 0)."""
    with distributed.session(pick_device(data.device)) as job:
        if job is not None and data.shard is not None:
            raise UsageError(f"--shard {data.shard[0]}/{data.shard[1]} cannot be used under torchrun: "
                             f"each of the {job[0].world_size} ranks already takes its own slice.",
                             "Drop --shard, or run without torchrun.")
        main = job is None or job[0].is_main
        ckpt = api.load(path, allow_globals=data.allow_globals, nesting=data.nesting)
        quiet = Console(stderr=True, quiet=True)
        with stage_progress(err if main else quiet):
            stats = api.gather_statistics(ckpt, data=data, analysis=analysis,
                                          device=None if job is None else job[1])
        if not main:
            return None
        if save_stats is not None:
            api.save_statistics(stats, save_stats)
            err.print(f"Statistics of {stats.describe_shards()} ({stats.gathered.vectors:,} vectors) written to {save_stats}")
            if not want_report:
                return None
        return api.report_from_statistics(stats, checkpoint=ckpt)
