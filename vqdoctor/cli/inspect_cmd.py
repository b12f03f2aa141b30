"""`vqdoctor inspect`: the full report for one checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vqdoctor.cli.common import DEFAULT_DPI, DpiOpt, QuietOpt, VerboseOpt, check_range, check_verbosity, shared_options
from vqdoctor.cli.errors import translate_errors
from vqdoctor.options import AnalysisOptions, DataOptions


def _next_steps() -> str:
    """After the default sample: the other samples and your own model, inside 80 columns."""
    return "\n".join([
        "Try next: vqdoctor inspect pretrained_healthy       (the paper's fix: healthy)",
        "          vqdoctor inspect small_encoder_embeddings_collapse",
        "          vqdoctor inspect YOUR.ckpt --latents z.npy [--labels y.npy]",
    ])


def _shown(path: Path) -> Path:
    """A shipped sample's path relative to the working directory where it lies below it, so the
    report and its remedies read ``vqdoctor/samples/NAME.safetensors``."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


@translate_errors
@shared_options()
def inspect_command(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="Checkpoint file or Hugging Face folder. Default: the shipped sample that shows tokens collapse.")] = None,
    *,
    data: DataOptions,
    analysis: AnalysisOptions,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the JSON report to PATH ('-' for stdout).", rich_help_panel="Output")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML report.", rich_help_panel="Output")] = None,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Write PNG plots into this folder.", rich_help_panel="Output")] = None,
    save_stats: Annotated[Optional[Path], typer.Option("--save-stats", help="Write the mergeable statistics to FILE (for vqdoctor merge); the report is skipped unless --json/--html/--plots is given.", rich_help_panel="Output")] = None,
    dpi: DpiOpt = DEFAULT_DPI,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Diagnose codebook collapse: usage, EMA, geometry, W rank, tokens and embeddings collapse."""
    from rich.console import Console

    from vqdoctor.cli.configured import with_config_bounds
    from vqdoctor.cli.outputs import write_outputs
    from vqdoctor.cli.paths import check_outputs
    from vqdoctor.cli.runs import analyse
    from vqdoctor.remedies import data_args
    from vqdoctor.samples import DEFAULT_SAMPLE, sample_path, shipped_sample_for

    check_verbosity(verbose, quiet)
    check_range("--dpi", dpi)
    default = checkpoint is None
    path = _shown(sample_path(DEFAULT_SAMPLE)) if checkpoint is None else checkpoint
    shipped = None if checkpoint is None else shipped_sample_for(checkpoint)
    check_outputs(("--json", json_out), ("--html", html), ("--plots", plots), ("--save-stats", save_stats))
    err = Console(stderr=True)
    if default:
        err.print(f"No checkpoint given: inspecting the shipped sample [bold]{DEFAULT_SAMPLE}[/] ({path}).")
    elif shipped is not None:
        err.print(f"{checkpoint} is not here: inspecting the shipped sample {shipped}.")
        path = _shown(shipped)
    report = analyse(path, data=data, analysis=analysis, save_stats=save_stats,
                     want_report=json_out is not None or html is not None or plots is not None, err=err)
    if report is None:
        return
    report = with_config_bounds(report, data_args=data_args(data, metric=analysis.metric))
    out = write_outputs(report, json_out=json_out, html=html, plots=plots, err=err, verbose=verbose, quiet=quiet,
                        dpi=dpi)
    if out is not None and default:
        out.print(_next_steps(), markup=False, highlight=False)
