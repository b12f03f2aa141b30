"""`vqdoctor inspect`: the full report for one checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from vqdoctor import api
from vqdoctor.cli.app import app
from vqdoctor.cli.common import (
    AllowGlobalOpt, BatchSizeOpt, BudgetOpt, ChannelAxisOpt, CodebookOpt, DeviceOpt, EncodeMethodOpt,
    EncoderOpt, InputsOpt, LabelsOpt, LatentsOpt, MaxVectorsOpt, MinCountOpt, ModelOpt, NestingOpt, ProjectionOpt,
    SeedOpt, SubsampleOpt, analysis_options, data_options,
)
from vqdoctor.cli.errors import translate_errors
from vqdoctor.cli.progress import vector_progress
from vqdoctor.report.json_out import write_json
from vqdoctor.report.terminal import render_terminal
from vqdoctor.samples import DEFAULT_SAMPLE, sample_path


def _next_steps(ckpt: str) -> str:
    return (
        "Try next:\n"
        f"  vqdoctor inspect {ckpt} --html report.html --plots plots/   # pictures\n"
        f"  vqdoctor inspect {ckpt} --json -                              # machine-readable\n"
        "  vqdoctor inspect sample_checkpoints/pretrained_healthy.safetensors    # the paper's fix\n"
        "  vqdoctor ls sample_checkpoints/residual_vq.safetensors              # what was found where\n"
        "  vqdoctor inspect YOUR.ckpt --latents z.npy [--labels y.npy]       # your own model"
    )


@app.command("inspect")
@translate_errors
def inspect_command(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="Checkpoint file or Hugging Face folder. Default: the shipped sample that shows tokens collapse.")] = None,
    latents: LatentsOpt = None,
    channel_axis: ChannelAxisOpt = None,
    inputs: InputsOpt = None,
    labels: LabelsOpt = None,
    model: ModelOpt = None,
    encoder: EncoderOpt = None,
    encode_method: EncodeMethodOpt = None,
    allow_global: AllowGlobalOpt = None,
    nesting: NestingOpt = None,
    codebook: CodebookOpt = None,
    min_count: MinCountOpt = 1,
    subsample: SubsampleOpt = 4000,
    projection: ProjectionOpt = "pca",
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 8192,
    max_vectors: MaxVectorsOpt = None,
    memory_budget_mb: BudgetOpt = 256,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the JSON report to PATH ('-' for stdout).", rich_help_panel="Output")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML report.", rich_help_panel="Output")] = None,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Write PNG plots into this folder.", rich_help_panel="Output")] = None,
) -> None:
    """Diagnose codebook collapse: usage, EMA, geometry, W rank, tokens and embeddings collapse."""
    default = checkpoint is None
    path = sample_path(DEFAULT_SAMPLE) if default else checkpoint
    data = data_options(
        latents=latents, channel_axis=channel_axis, inputs=inputs, labels=labels, model=model, encoder=encoder,
        encode_method=encode_method, allow_global=allow_global, nesting=nesting, batch_size=batch_size, device=device,
        max_vectors=max_vectors,
    )
    analysis = analysis_options(codebook=codebook, min_count=min_count, subsample=subsample,
                                projection=projection, seed=seed, memory_budget_mb=memory_budget_mb)
    err = Console(stderr=True)
    if default:
        err.print(f"No checkpoint given: inspecting the shipped sample [bold]{DEFAULT_SAMPLE}[/] ({path}).")
    with vector_progress(err) as advance:
        report = api.inspect(path, data=data, analysis=analysis, progress=advance)
    to_stdout = json_out == "-"
    if json_out is not None:
        write_json(report, json_out)
    if html is not None:
        from vqdoctor.report.html import write_html

        write_html(report, html)
        err.print(f"HTML report written to {html}")
    if plots is not None:
        from vqdoctor.report.plots import save_plots

        written = save_plots(report, plots)
        err.print(f"{len(written)} plots written to {plots}/")
    if not to_stdout:
        out = Console()
        render_terminal(report, out)
        if default:
            out.print(_next_steps(str(path)))
