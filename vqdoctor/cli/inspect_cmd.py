"""`vqdoctor inspect`: the full report for one checkpoint."""

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
    MetricOpt,
    MinCountOpt,
    ModelOpt,
    ModesOpt,
    NestingOpt,
    PixelRangeOpt,
    ProjectionOpt,
    SeedOpt,
    ShardOpt,
    SubsampleOpt,
    analysis_options,
    data_options,
    parse_shard,
)
from vqdoctor.cli.errors import translate_errors
from vqdoctor.cli.outputs import write_outputs
from vqdoctor.cli.paths import check_outputs
from vqdoctor.cli.runs import analyse
from vqdoctor.samples import DEFAULT_SAMPLE, sample_path, shipped_sample_for


def _next_steps(ckpt: str) -> str:
    return "\n".join([
        "Try next:",
        "  the paper's fix, healthy:  vqdoctor inspect sample_checkpoints/pretrained_healthy.safetensors",
        "  embeddings collapse:       vqdoctor inspect sample_checkpoints/small_encoder_embeddings_collapse.safetensors",
        "  pictures:                  vqdoctor inspect --html report.html --plots plots/",
        "  machine-readable:          vqdoctor inspect --json -",
        "  repair this one:           vqdoctor fix kmeans " + ckpt + " --out fixed.safetensors",
        "  your own model:            vqdoctor inspect YOUR.ckpt --latents z.npy [--labels y.npy]",
    ])


@app.command("inspect")
@translate_errors
def inspect_command(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="Checkpoint file or Hugging Face folder. Default: the shipped sample that shows tokens collapse.")] = None,
    latents: LatentsOpt = None,
    channel_axis: ChannelAxisOpt = None,
    inputs: InputsOpt = None,
    labels: LabelsOpt = None,
    image_size: ImageSizeOpt = None,
    clip_seconds: ClipSecondsOpt = None,
    pixel_range: PixelRangeOpt = None,
    model: ModelOpt = None,
    encoder: EncoderOpt = None,
    encode_method: EncodeMethodOpt = None,
    allow_global: AllowGlobalOpt = None,
    nesting: NestingOpt = None,
    codebook: CodebookOpt = None,
    metric: MetricOpt = "auto",
    min_count: MinCountOpt = 1,
    subsample: SubsampleOpt = 4000,
    projection: ProjectionOpt = "pca",
    modes: ModesOpt = "auto",
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 8192,
    max_vectors: MaxVectorsOpt = None,
    memory_budget_mb: BudgetOpt = 256,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the JSON report to PATH ('-' for stdout).", rich_help_panel="Output")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML report.", rich_help_panel="Output")] = None,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Write PNG plots into this folder.", rich_help_panel="Output")] = None,
    shard: ShardOpt = None,
    save_stats: Annotated[Optional[Path], typer.Option("--save-stats", help="Write the mergeable statistics to FILE (for vqdoctor merge); the report is skipped unless --json/--html/--plots is given.", rich_help_panel="Output")] = None,
) -> None:
    """Diagnose codebook collapse: usage, EMA, geometry, W rank, tokens and embeddings collapse."""
    default = checkpoint is None
    path = sample_path(DEFAULT_SAMPLE) if default else checkpoint
    shipped = None if default else shipped_sample_for(checkpoint)
    data = data_options(
        latents=latents, channel_axis=channel_axis, inputs=inputs, labels=labels, image_size=image_size, clip_seconds=clip_seconds, pixel_range=pixel_range, model=model, encoder=encoder,
        encode_method=encode_method, allow_global=allow_global, nesting=nesting, batch_size=batch_size, device=device,
        max_vectors=max_vectors, shard=parse_shard(shard),
    )
    analysis = analysis_options(codebook=codebook, min_count=min_count, subsample=subsample,
                                projection=projection, seed=seed, memory_budget_mb=memory_budget_mb, metric=metric, modes=modes)
    check_outputs(("--json", json_out), ("--html", html), ("--plots", plots), ("--save-stats", save_stats))
    err = Console(stderr=True)
    if default:
        err.print(f"No checkpoint given: inspecting the shipped sample [bold]{DEFAULT_SAMPLE}[/] ({path}).")
    elif shipped is not None:
        err.print(f"{checkpoint} is not here: inspecting the shipped sample {shipped}.")
        path = shipped
    report = analyse(path, data=data, analysis=analysis, save_stats=save_stats,
                     want_report=json_out is not None or html is not None or plots is not None, err=err)
    if report is None:
        return
    out = write_outputs(report, json_out=json_out, html=html, plots=plots, err=err)
    if out is not None and default:
        out.print(_next_steps(str(path)))
