"""`vqdoctor trend`: the analysis over every checkpoint of a run, in step order."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from vqdoctor.cli.app import app
from vqdoctor.cli.common import (
    AllowGlobalOpt,
    BatchSizeOpt,
    BudgetOpt,
    ChannelAxisOpt,
    ClipSecondsOpt,
    CodebookOpt,
    DeviceOpt,
    EncodeMethodOpt,
    EncoderOpt,
    ImageSizeOpt,
    InputsOpt,
    LabelsOpt,
    LatentsOpt,
    MaxVectorsOpt,
    MinCountOpt,
    ModelArgOpt,
    ModelOpt,
    NestingOpt,
    SampleRateOpt,
    SeedOpt,
    SubsampleOpt,
    analysis_options,
    data_options,
)
from vqdoctor.cli.errors import translate_errors
from vqdoctor.cli.paths import check_outputs
from vqdoctor.errors import UsageError

PLOT_FORMATS = (".png", ".svg", ".pdf")


@app.command("trend")
@translate_errors
def trend_command(
    run: Annotated[str, typer.Argument(help="The run's folder of checkpoints, or a glob (quoted) such as 'run/step_*.pt'.")],
    latents: LatentsOpt = None,
    channel_axis: ChannelAxisOpt = None,
    inputs: InputsOpt = None,
    labels: LabelsOpt = None,
    image_size: ImageSizeOpt = None,
    clip_seconds: ClipSecondsOpt = None,
    sample_rate: SampleRateOpt = None,
    model: ModelOpt = None,
    model_arg: ModelArgOpt = None,
    encoder: EncoderOpt = None,
    encode_method: EncodeMethodOpt = None,
    allow_global: AllowGlobalOpt = None,
    nesting: NestingOpt = None,
    codebook: CodebookOpt = None,
    min_count: MinCountOpt = 1,
    subsample: SubsampleOpt = 4000,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 8192,
    max_vectors: MaxVectorsOpt = None,
    memory_budget_mb: BudgetOpt = 256,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the trend as JSON to PATH ('-' for stdout).", rich_help_panel="Output")] = None,
    csv_out: Annotated[Optional[str], typer.Option("--csv", help="Write one row per step and codebook as CSV to PATH ('-' for stdout).", rich_help_panel="Output")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a plot (metric vs step, one line per codebook): .png, .svg or .pdf.", rich_help_panel="Output")] = None,
) -> None:
    """Follow a run: utilization, perplexity, dead codes, EMA usage, W rank, allocation TV per step, and verdicts on the trend."""
    from vqdoctor.report.trend_out import render_trend, save_trend_plot, trend_json, write_text
    from vqdoctor.trend import to_csv, trend

    if json_out == "-" and csv_out == "-":
        raise UsageError("--json - and --csv - cannot both go to stdout.", "Write one of them to a file.")
    if plot is not None and plot.suffix.lower() not in PLOT_FORMATS:
        raise UsageError(f"--plot {plot} has an unknown picture format {plot.suffix or '(none)'!r}.",
                         f"Use one of {', '.join(PLOT_FORMATS)}.")
    check_outputs(("--json", json_out), ("--csv", csv_out), ("--plot", plot))
    data = data_options(
        latents=latents, channel_axis=channel_axis, inputs=inputs, labels=labels, image_size=image_size,
        clip_seconds=clip_seconds, sample_rate=sample_rate, model=model, model_arg=model_arg, encoder=encoder, encode_method=encode_method,
        allow_global=allow_global, nesting=nesting, batch_size=batch_size, device=device, max_vectors=max_vectors,
    )
    analysis = analysis_options(codebook=codebook, min_count=min_count, subsample=subsample, projection="none",
                                seed=seed, memory_budget_mb=memory_budget_mb)
    err = Console(stderr=True)
    result = trend(run, data=data, analysis=analysis,
                   on_checkpoint=lambda i, n, p: err.print(f"[{i + 1}/{n}] step {p.step:,}: {p.path}", highlight=False))
    if json_out is not None:
        write_text(trend_json(result), json_out)
    if csv_out is not None:
        write_text(to_csv(result), csv_out)
    if plot is not None:
        save_trend_plot(result, plot)
        err.print(f"Plot written to {plot}")
    if "-" not in (json_out, csv_out):
        render_trend(result, Console())
