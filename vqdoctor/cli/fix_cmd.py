"""`vqdoctor fix kmeans|revive|simvq`: repair a checkpoint, write a new file, show before/after.

The commands parse options into a fix value (:mod:`vqdoctor.fixes.values`), call
:func:`vqdoctor.api.fix_checkpoint` with it, and render the outcome
(:func:`vqdoctor.report.fix_result.render_fix`: the before/after table from the two reports; the
after-report is measured on the written file: vqdoctor/repair.py). Exit codes: 0 written; 1 the verified after-state is worse than the
before-state and nothing was written (``--force`` writes it and exits 0); 2 usage or input error."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from vqdoctor import api
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
    ModelOpt,
    ModesOpt,
    NestingOpt,
    SeedOpt,
    check_metric,
    check_modes,
    check_ranges,
    data_options,
)
from vqdoctor.cli.errors import translate_errors
from vqdoctor.cli.paths import check_outputs
from vqdoctor.core.kmeans import LloydProgress
from vqdoctor.fixes import Fix, KMeansFix, ReviveFix, SimVQFix
from vqdoctor.options import AnalysisOptions, DataOptions
from vqdoctor.report.fix_result import render_fix

fix_app = typer.Typer(
    help="Repair a checkpoint: k-means re-init, revive dead codes, convert to SimVQ. Writes a new file.",
    no_args_is_help=True,
)
app.add_typer(fix_app, name="fix")

OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Where to write the repaired checkpoint (same format as the input).", rich_help_panel="Output")]
InPlaceOpt = Annotated[bool, typer.Option("--in-place", help="Overwrite the input (a backup NAME.bak is kept).", rich_help_panel="Output")]
IterOpt = Annotated[int, typer.Option("--iters", help="Lloyd iterations of k-means.", rich_help_panel="Fix")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Write the output even when the verified after-state is worse than the before-state (fewer used codes or higher quantization error).", rich_help_panel="Output")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the fix outcome as JSON (schema vqdoctor.fix/1) instead of the table.", rich_help_panel="Output")]


@contextmanager
def _lloyd_progress(err: Console) -> Iterator[LloydProgress | None]:
    """Per-iteration k-means progress on stderr (iteration, inertia, ETA); None when stderr is
    not a terminal, so logs and pipes stay quiet."""
    if not err.is_terminal:
        yield None
        return
    state = {"last": time.perf_counter(), "t0": time.perf_counter()}

    def report(done: int, total: int, inertia: float) -> None:
        now = time.perf_counter()
        if done == 1:  # a new k-means (next codebook): time from the end of the previous one (seeding included)
            state["t0"] = state["last"]
        state["last"] = now
        eta = (now - state["t0"]) / done * max(0, total - done)
        err.print(f"k-means iteration {done}/{total}: inertia {inertia:.6g}, ETA {eta:.0f} s", markup=False,
                  highlight=False, end="\r" if done < total else "\n")

    yield report


def _run(checkpoint: Path, fix: Fix, *, out: Path | None, in_place: bool, data: DataOptions,
         analysis: AnalysisOptions, force: bool, as_json: bool) -> None:
    """One fix through the API, then its outcome as a table (or JSON) on rank 0; exit 1 when not written."""
    if not in_place:
        check_outputs(("--out", out))
    err = Console(stderr=True)
    outcome = api.fix_checkpoint(checkpoint, fix=fix, out=out, in_place=in_place, data=data, analysis=analysis,
                                 force=force, lloyd_progress=lambda: _lloyd_progress(err))
    if not api.is_main_process():  # under torchrun only rank 0 wrote the file and reports it
        return
    if as_json:
        print(json.dumps(outcome.to_dict(), indent=2))
    else:
        render_fix(outcome, Console(), err)
    if outcome.path is None:
        raise typer.Exit(code=1)


def _analysis(codebook: str | None, memory_budget_mb: int, metric: str, modes: str) -> AnalysisOptions:
    return AnalysisOptions(codebook=codebook, projection="none", memory_budget_mb=memory_budget_mb, keep_counts=False,
                           metric=check_metric(metric), modes=check_modes(modes))


# ---------------------------------------------------------------------------------------------
# commands


@fix_app.command("kmeans")
@translate_errors
def kmeans_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or Hugging Face folder.")],
    out: OutOpt = None,
    latents: LatentsOpt = None,
    channel_axis: ChannelAxisOpt = None,
    inputs: InputsOpt = None,
    labels: LabelsOpt = None,
    image_size: ImageSizeOpt = None,
    clip_seconds: ClipSecondsOpt = None,
    model: ModelOpt = None,
    encoder: EncoderOpt = None,
    encode_method: EncodeMethodOpt = None,
    encoder_from: Annotated[Optional[Path], typer.Option("--encoder-from", help="A pretrained checkpoint (e.g. the autoencoder trained without VQ): its encoder is copied into the output (matched by key) and the codebook is fitted on its outputs.", rich_help_panel="Encoder")] = None,
    encoder_prefix: Annotated[Optional[list[str]], typer.Option("--encoder-prefix", help="Module(s) that make the encoder, copied by --encoder-from (repeatable; default: encoder).", rich_help_panel="Encoder")] = None,
    with_decoder: Annotated[bool, typer.Option("--with-decoder", help="Also copy the pretrained decoder (--decoder-prefix, default: decoder).", rich_help_panel="Encoder")] = False,
    decoder_prefix: Annotated[Optional[list[str]], typer.Option("--decoder-prefix", help="Module(s) that make the decoder, copied by --with-decoder (repeatable; default: decoder).", rich_help_panel="Encoder")] = None,
    allow_global: AllowGlobalOpt = None,
    nesting: NestingOpt = None,
    codebook: CodebookOpt = None,
    metric: MetricOpt = "auto",
    iters: IterOpt = 20,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 8192,
    max_vectors: MaxVectorsOpt = None,
    memory_budget_mb: BudgetOpt = 256,
    modes: ModesOpt = "auto",
    in_place: InPlaceOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-initialise codebooks by k-means (k = codebook size) on the encoder's outputs; with
    --encoder-from, write the paper's model: the pretrained encoder plus the k-means codebook."""
    data = data_options(latents=latents, channel_axis=channel_axis, inputs=inputs, labels=labels, image_size=image_size,
                        clip_seconds=clip_seconds, model=model, encoder=encoder, encode_method=encode_method,
                        allow_global=allow_global, nesting=nesting, batch_size=batch_size, device=device,
                        max_vectors=max_vectors)
    check_ranges(("--seed", seed), ("--iters", iters), ("--memory-budget-mb", memory_budget_mb))
    fix = KMeansFix(iters=iters, seed=seed, memory_budget_mb=memory_budget_mb, encoder_from=encoder_from,
                    encoder_prefixes=tuple(encoder_prefix or ("encoder",)), with_decoder=with_decoder,
                    decoder_prefixes=tuple(decoder_prefix or ("decoder",)))
    _run(checkpoint, fix, out=out, in_place=in_place, data=data, force=force, as_json=as_json,
         analysis=_analysis(codebook, memory_budget_mb, metric, modes))


@fix_app.command("revive")
@translate_errors
def revive_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or Hugging Face folder.")],
    out: OutOpt = None,
    latents: LatentsOpt = None,
    channel_axis: ChannelAxisOpt = None,
    inputs: InputsOpt = None,
    labels: LabelsOpt = None,
    image_size: ImageSizeOpt = None,
    clip_seconds: ClipSecondsOpt = None,
    model: ModelOpt = None,
    encoder: EncoderOpt = None,
    encode_method: EncodeMethodOpt = None,
    allow_global: AllowGlobalOpt = None,
    nesting: NestingOpt = None,
    codebook: CodebookOpt = None,
    metric: MetricOpt = "auto",
    min_count: Annotated[int, typer.Option("--min-count", help="A code used fewer times than this is dead and gets replaced.", rich_help_panel="Fix")] = 1,
    iters: IterOpt = 20,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 8192,
    max_vectors: MaxVectorsOpt = None,
    memory_budget_mb: BudgetOpt = 256,
    modes: ModesOpt = "auto",
    in_place: InPlaceOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Replace only the dead codes with centroids of the worst-served regions; live codes stay bit-exact."""
    data = data_options(latents=latents, channel_axis=channel_axis, inputs=inputs, labels=labels, image_size=image_size,
                        clip_seconds=clip_seconds, model=model, encoder=encoder, encode_method=encode_method,
                        allow_global=allow_global, nesting=nesting, batch_size=batch_size, device=device,
                        max_vectors=max_vectors)
    check_ranges(("--seed", seed), ("--iters", iters), ("--min-count", min_count), ("--memory-budget-mb", memory_budget_mb))
    fix = ReviveFix(min_count=min_count, iters=iters, seed=seed, memory_budget_mb=memory_budget_mb)
    _run(checkpoint, fix, out=out, in_place=in_place, data=data, force=force, as_json=as_json,
         analysis=_analysis(codebook, memory_budget_mb, metric, modes))


@fix_app.command("simvq")
@translate_errors
def simvq_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or Hugging Face folder.")],
    out: OutOpt = None,
    mode: Annotated[str, typer.Option("--mode", help="exact: C = old codebook, W = I (same assignments); paper: Gaussian C frozen, W fitted.", rich_help_panel="Fix")] = "exact",
    layout: Annotated[str, typer.Option("--layout", help="vqp: vector-quantize-pytorch SimVQ keys; official: the SimVQ paper code's keys.", rich_help_panel="Fix")] = "vqp",
    latents: LatentsOpt = None,
    channel_axis: ChannelAxisOpt = None,
    inputs: InputsOpt = None,
    labels: LabelsOpt = None,
    image_size: ImageSizeOpt = None,
    clip_seconds: ClipSecondsOpt = None,
    model: ModelOpt = None,
    encoder: EncoderOpt = None,
    encode_method: EncodeMethodOpt = None,
    allow_global: AllowGlobalOpt = None,
    nesting: NestingOpt = None,
    codebook: CodebookOpt = None,
    metric: MetricOpt = "auto",
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 8192,
    max_vectors: MaxVectorsOpt = None,
    memory_budget_mb: BudgetOpt = 256,
    modes: ModesOpt = "auto",
    in_place: InPlaceOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Rewrite codebooks as SimVQ (codes = C·Wᵀ, C frozen). Data is optional (for before/after)."""
    fix = SimVQFix(mode=mode, layout=layout, seed=seed)  # type: ignore[arg-type]  # checked by SimVQFix
    data = data_options(latents=latents, channel_axis=channel_axis, inputs=inputs, labels=labels, image_size=image_size,
                        clip_seconds=clip_seconds, model=model, encoder=encoder, encode_method=encode_method,
                        allow_global=allow_global, nesting=nesting, batch_size=batch_size, device=device,
                        max_vectors=max_vectors)
    check_ranges(("--seed", seed), ("--memory-budget-mb", memory_budget_mb))
    _run(checkpoint, fix, out=out, in_place=in_place, data=data, force=force, as_json=as_json,
         analysis=_analysis(codebook, memory_budget_mb, metric, modes))
