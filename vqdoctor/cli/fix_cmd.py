"""`vqdoctor fix kmeans|revive|simvq`: options -> a fix value (:mod:`vqdoctor.fixes.values`) ->
:func:`vqdoctor.api.fix_checkpoint` -> the outcome rendered (:mod:`vqdoctor.report.fix_result`). Exit codes:
0 written; 1 the verified after-state is worse and nothing was written (``--force`` writes it); 2 usage or input error."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from vqdoctor.cli.common import check_ranges, shared_options
from vqdoctor.cli.errors import translate_errors
from vqdoctor.options import AnalysisOptions, DataOptions

if TYPE_CHECKING:  # the commands import these when they run (start-up stays light)
    from vqdoctor.fixes import Fix

FIX_HELP = "Repair a checkpoint: k-means re-init, revive dead codes, convert to SimVQ. Writes a new file."

OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Where to write the repaired checkpoint (same format as the input).", rich_help_panel="Output")]
InPlaceOpt = Annotated[bool, typer.Option("--in-place", help="Overwrite the input (a backup NAME.bak is kept).", rich_help_panel="Output")]
IterOpt = Annotated[int, typer.Option("--iters", help="Lloyd iterations of k-means.", rich_help_panel="Fix")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Write the output even when the verified after-state is worse than the before-state (fewer used codes or higher quantization error).", rich_help_panel="Output")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the fix outcome as JSON (schema vqdoctor.fix/1) instead of the table.", rich_help_panel="Output")]


def _run(checkpoint: Path, fix: Fix, *, out: Path | None, in_place: bool, data: DataOptions,
         analysis: AnalysisOptions, force: bool, as_json: bool) -> None:
    """One fix through the API, then its outcome as a table (or JSON) on rank 0; exit 1 when not written."""
    from rich.console import Console

    from vqdoctor import api
    from vqdoctor.cli.paths import check_outputs
    from vqdoctor.cli.progress import lloyd_progress, stage_progress
    from vqdoctor.report.fix_result import fix_json, render_fix
    from vqdoctor.report.json_out import write_text

    if not in_place:
        check_outputs(("--out", out))
    analysis = dataclasses.replace(analysis, projection="none", keep_counts=False)
    err = Console(stderr=True)
    with stage_progress(err):  # load, modes, assign, k-means iteration ... on a terminal
        outcome = api.fix_checkpoint(checkpoint, fix=fix, out=out, in_place=in_place, data=data, analysis=analysis,
                                     force=force, lloyd_progress=lambda: lloyd_progress(err))
    if not api.is_main_process():  # under torchrun only rank 0 wrote the file and reports it
        return
    if as_json:
        write_text(fix_json(outcome), "-")
    else:
        render_fix(outcome, Console(), err)
    if outcome.path is None:
        raise typer.Exit(code=1)


# ---------------------------------------------------------------------------------------------
# commands


@translate_errors
@shared_options(exclude=("min_count", "subsample", "projection", "shard"))
def kmeans_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or Hugging Face folder.")],
    out: OutOpt = None,
    *,
    data: DataOptions,
    encoder_from: Annotated[Optional[Path], typer.Option("--encoder-from", help="A pretrained checkpoint (e.g. the autoencoder trained without VQ): its encoder is copied into the output (matched by key) and the codebook is fitted on its outputs.", rich_help_panel="Encoder")] = None,
    encoder_prefix: Annotated[Optional[list[str]], typer.Option("--encoder-prefix", help="Module(s) that make the encoder, copied by --encoder-from (repeatable; default: encoder).", rich_help_panel="Encoder")] = None,
    with_decoder: Annotated[bool, typer.Option("--with-decoder", help="Also copy the pretrained decoder (--decoder-prefix, default: decoder).", rich_help_panel="Encoder")] = False,
    decoder_prefix: Annotated[Optional[list[str]], typer.Option("--decoder-prefix", help="Module(s) that make the decoder, copied by --with-decoder (repeatable; default: decoder).", rich_help_panel="Encoder")] = None,
    iters: IterOpt = 20,
    analysis: AnalysisOptions,
    in_place: InPlaceOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-initialise codebooks by k-means (k = codebook size) on the encoder's outputs; with
    --encoder-from, write the paper's model: the pretrained encoder plus the k-means codebook."""
    check_ranges(("--iters", iters))
    from vqdoctor.fixes import KMeansFix

    fix = KMeansFix(iters=iters, seed=analysis.seed, memory_budget_mb=analysis.memory_budget_mb, encoder_from=encoder_from,
                    encoder_prefixes=tuple(encoder_prefix or ("encoder",)), with_decoder=with_decoder,
                    decoder_prefixes=tuple(decoder_prefix or ("decoder",)))
    _run(checkpoint, fix, out=out, in_place=in_place, data=data, analysis=analysis, force=force, as_json=as_json)


@translate_errors
@shared_options(exclude=("min_count", "subsample", "projection", "shard"))
def revive_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or Hugging Face folder.")],
    out: OutOpt = None,
    *,
    data: DataOptions,
    min_count: Annotated[int, typer.Option("--min-count", help="A code used fewer times than this is dead and gets replaced.", rich_help_panel="Fix")] = 1,
    iters: IterOpt = 20,
    analysis: AnalysisOptions,
    in_place: InPlaceOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Replace only the dead codes with centroids of the worst-served regions; live codes stay bit-exact."""
    check_ranges(("--iters", iters), ("--min-count", min_count))
    from vqdoctor.fixes import ReviveFix

    fix = ReviveFix(min_count=min_count, iters=iters, seed=analysis.seed, memory_budget_mb=analysis.memory_budget_mb)
    _run(checkpoint, fix, out=out, in_place=in_place, data=data, analysis=analysis, force=force, as_json=as_json)


@translate_errors
@shared_options(exclude=("min_count", "subsample", "projection", "shard"))
def simvq_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or Hugging Face folder.")],
    out: OutOpt = None,
    mode: Annotated[str, typer.Option("--mode", help="exact: C = old codebook, W = I (same assignments); paper: Gaussian C frozen, W fitted.", rich_help_panel="Fix")] = "exact",
    layout: Annotated[str, typer.Option("--layout", help="vqp: vector-quantize-pytorch SimVQ keys; official: the SimVQ paper code's keys.", rich_help_panel="Fix")] = "vqp",
    *,
    data: DataOptions,
    analysis: AnalysisOptions,
    in_place: InPlaceOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Rewrite codebooks as SimVQ (codes = C·Wᵀ, C frozen). Data is optional (for before/after)."""
    from vqdoctor.fixes import SimVQFix

    fix = SimVQFix(mode=mode, layout=layout, seed=analysis.seed)  # type: ignore[arg-type]  # checked by SimVQFix
    _run(checkpoint, fix, out=out, in_place=in_place, data=data, analysis=analysis, force=force, as_json=as_json)
