"""`vqdoctor merge`: statistics files of shards -> the report one pass over all the data gives."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vqdoctor.cli.common import (
    DEFAULT_DPI,
    AllowGlobalOpt,
    DpiOpt,
    NestingOpt,
    QuietOpt,
    VerboseOpt,
    check_range,
    check_verbosity,
)
from vqdoctor.cli.errors import translate_errors


@translate_errors
def merge_command(
    files: Annotated[list[Path], typer.Argument(help="Statistics files written by 'vqdoctor inspect --shard i/n --save-stats FILE', in any order.")],
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="The checkpoint the statistics were made from (its sha256 must match the recorded one): gives the full report. Without it nothing the files name is opened and the report holds what the statistics alone give.", rich_help_panel="Checkpoint")] = None,
    allow_global: AllowGlobalOpt = None,
    nesting: NestingOpt = None,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the JSON report to PATH ('-' for stdout).", rich_help_panel="Output")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML report.", rich_help_panel="Output")] = None,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Write PNG plots into this folder.", rich_help_panel="Output")] = None,
    save_stats: Annotated[Optional[Path], typer.Option("--save-stats", help="Also write the merged statistics to FILE (merge again later).", rich_help_panel="Output")] = None,
    dpi: DpiOpt = DEFAULT_DPI,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Merge the statistics of data shards into one report (refuses different checkpoints, codebooks or options).

    A statistics file is never trusted: its recorded checkpoint path, nesting and options are not
    used to load anything. Pass --checkpoint PATH (and --allow-global / --nesting for it) for the
    full report; without it the report holds usage, allocation and embeddings collapse only."""
    from rich.console import Console

    from vqdoctor import api
    from vqdoctor.cli.configured import with_config_bounds
    from vqdoctor.cli.outputs import write_outputs
    from vqdoctor.cli.paths import check_outputs
    from vqdoctor.stats_report import stats_remedy

    check_verbosity(verbose, quiet)
    check_range("--dpi", dpi)
    check_outputs(("--json", json_out), ("--html", html), ("--plots", plots), ("--save-stats", save_stats))
    err = Console(stderr=True)
    stats = api.load_statistics(*files)
    err.print(f"Merged {len(files)} file(s): {stats.describe_shards()}, {stats.gathered.vectors:,} vectors.")
    if save_stats is not None:
        api.save_statistics(stats, save_stats)
        err.print(f"Merged statistics written to {save_stats}")
    report = api.report_from_statistics(stats, checkpoint=checkpoint,
                                        allow_globals=tuple(allow_global or ()), nesting=nesting)
    if checkpoint is None:  # said even in the compact report, which leaves the notes to --verbose
        err.print("Report from the statistics alone: pass --checkpoint PATH (the file they were made from) "
                  "for geometry, EMA buffers, W rank and the 2-D picture.")

    # the fix commands as the report wrote them: the user's checkpoint (the one re-loaded), else a placeholder
    c = report.checkpoint
    report = with_config_bounds(report, remedy=stats_remedy(c.format, None if checkpoint is None else c.path))
    write_outputs(report, json_out=json_out, html=html, plots=plots, err=err, verbose=verbose, quiet=quiet, dpi=dpi)
