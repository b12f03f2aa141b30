"""`vqdoctor trend`: the analysis over every checkpoint of a run, in step order."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from vqdoctor.cli.common import DEFAULT_DPI, DpiOpt, check_range, shared_options
from vqdoctor.cli.errors import translate_errors
from vqdoctor.errors import UsageError
from vqdoctor.options import AnalysisOptions, DataOptions

PLOT_FORMATS = (".png", ".svg", ".pdf")


@translate_errors
@shared_options(exclude=("metric", "projection", "modes", "shard"))
def trend_command(
    run: Annotated[str, typer.Argument(help="The run's folder of checkpoints, or a glob (quoted) such as 'run/step_*.pt'.")],
    *,
    data: DataOptions,
    analysis: AnalysisOptions,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the trend as JSON to PATH ('-' for stdout).", rich_help_panel="Output")] = None,
    csv_out: Annotated[Optional[str], typer.Option("--csv", help="Write one row per step and codebook as CSV to PATH ('-' for stdout).", rich_help_panel="Output")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a plot (metric vs step, one line per codebook): .png, .svg or .pdf.", rich_help_panel="Output")] = None,
    dpi: DpiOpt = DEFAULT_DPI,
) -> None:
    """Follow a run: utilization, perplexity, dead codes, EMA usage, W rank, allocation TV per step, and verdicts on the trend."""
    from rich.console import Console

    from vqdoctor.cli.paths import check_outputs
    from vqdoctor.report.json_out import write_text
    from vqdoctor.report.trend_out import render_trend, save_trend_plot, to_csv, trend_json
    from vqdoctor.trend import trend

    if json_out == "-" and csv_out == "-":
        raise UsageError("--json - and --csv - cannot both go to stdout.", "Write one of them to a file.")
    if plot is not None and plot.suffix.lower() not in PLOT_FORMATS:
        raise UsageError(f"--plot {plot} has an unknown picture format {plot.suffix or '(none)'!r}.",
                         f"Use one of {', '.join(PLOT_FORMATS)}.")
    check_range("--dpi", dpi)
    check_outputs(("--json", json_out), ("--csv", csv_out), ("--plot", plot))
    analysis = dataclasses.replace(analysis, projection="none")
    err = Console(stderr=True)
    result = trend(run, data=data, analysis=analysis,
                   on_checkpoint=lambda i, n, p: err.print(f"[{i + 1}/{n}] step {p.step:,}: {p.path}", highlight=False))
    if json_out is not None:
        write_text(trend_json(result), json_out)
    if csv_out is not None:
        write_text(to_csv(result), csv_out)
    if plot is not None:
        save_trend_plot(result, plot, dpi=dpi)
        err.print(f"Plot written to {plot}")
    if "-" not in (json_out, csv_out):
        render_trend(result, Console())
