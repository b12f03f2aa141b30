"""`vqdoctor fix kmeans|revive|simvq`: repair a checkpoint, write a new file, show before/after.

The commands parse options, call :func:`vqdoctor.api.fix_checkpoint` with the fix to run, and
render the before/after table from the two reports (the after-report is measured on the written
file: vqdoctor/repair.py). Exit codes: 0 written; 1 the verified after-state is worse than the
before-state and nothing was written (``--force`` writes it and exits 0); 2 usage or input error."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from vqdoctor import api, distributed
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
from vqdoctor.cli.progress import lloyd_progress as _lloyd_progress
from vqdoctor.cli.progress import stage_progress
from vqdoctor.codebooks.model import Stack
from vqdoctor.core.kmeans import kmeans
from vqdoctor.errors import UsageError
from vqdoctor.fixes import FixResult, kmeans_reinit, revive_stack, to_simvq
from vqdoctor.options import AnalysisOptions, DataOptions
from vqdoctor.report.schema import CodebookReport, Report

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


# ---------------------------------------------------------------------------------------------
# rendering


def _fmt(v: float | int | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _rows(report: Report | None) -> dict[str, CodebookReport]:
    return {} if report is None else {cb.name: cb for cb in report.codebooks}


def _tv(cb: CodebookReport) -> float | None:
    return None if cb.tokens_collapse is None else cb.tokens_collapse.allocation_tv


def _render(outcome: api.FixOutcome, console: Console) -> None:
    err = Console(stderr=True)
    for note in outcome.notes:
        err.print(f"• {note}", markup=False, highlight=False)
    before, after = _rows(outcome.before), _rows(outcome.after)
    if before:
        table = Table(title="Before → after (same data, same analysis as `inspect`; after = the written file as it runs)")
        for col in ("codebook", "utilization", "perplexity", "dead codes", "quant. MSE", "allocation TV"):
            table.add_column(col, justify="left" if col == "codebook" else "right")
        a_rows = list(after.values())
        for i, (name, b) in enumerate(before.items()):
            a = after.get(name) or (a_rows[i] if i < len(a_rows) else None)

            def pair(get: Callable[[CodebookReport], object], spec: str) -> str:
                return f"{_fmt(get(b), spec)} → {_fmt(get(a), spec) if a else '—'}"  # type: ignore[arg-type]  # noqa: B023 (called in this iteration)

            def usage(attr: str) -> Callable[[CodebookReport], object]:
                return lambda r: None if r.usage is None else getattr(r.usage, attr)

            table.add_row(name, pair(usage("utilization"), ".3f"), pair(usage("perplexity"), ".1f"),
                          pair(usage("dead_codes"), "d"), pair(usage("quantization_mse"), ".4g"), pair(_tv, ".3f"))
        console.print(table)
    if outcome.copied:
        console.print(f"Tensors copied from {outcome.copied_from} ({len(outcome.copied)}):", markup=False, highlight=False)
        for c in outcome.copied:
            src = "" if c.source_key == c.key else f" (from {c.source_key})"
            console.print(f"  {c.part}: {c.key} {tuple(c.shape)}{src}", markup=False, highlight=False)
    if outcome.worse:
        console.print("WORSE after the fix: " + "; ".join(f"{c.name}: {', '.join(c.worse)}" for c in outcome.changes if c.worse),
                      markup=False, highlight=False)
    if outcome.path is None:
        console.print(f"Not written: {outcome.target} (pass --force to write a worse result)", markup=False, highlight=False)
    else:
        console.print(f"Wrote {outcome.path}", markup=False, highlight=False)


def _run(*, checkpoint: Path, out: Path | None, in_place: bool, data: DataOptions, codebook: str | None,
         encoder_from: Path | None, need_data: bool, budget_mb: int, fix: api.FixFn, across_ranks: bool = False,
         metric: str = "auto", modes: str = "auto",
         force: bool = False, as_json: bool = False, encoder_prefixes: tuple[str, ...] = ("encoder",),
         with_decoder: bool = False, decoder_prefixes: tuple[str, ...] = ("decoder",)) -> None:
    if not in_place:
        check_outputs(("--out", out))
    analysis = AnalysisOptions(codebook=codebook, projection="none", memory_budget_mb=budget_mb, keep_counts=False,
                               metric=check_metric(metric), modes=check_modes(modes))
    with stage_progress(Console(stderr=True)):  # load, modes, assign, k-means iteration ... on a terminal
        outcome = api.fix_checkpoint(checkpoint, fix=fix, out=out, in_place=in_place, data=data, analysis=analysis,
                                     encoder_from=encoder_from, need_data=need_data, across_ranks=across_ranks,
                                     force=force, encoder_prefixes=encoder_prefixes, with_decoder=with_decoder,
                                     decoder_prefixes=decoder_prefixes)
    job = distributed.detect()
    if job is not None and not job.is_main:  # under torchrun only rank 0 wrote the file and reports it
        return
    if as_json:
        print(json.dumps(outcome.to_dict(), indent=2))
    else:
        _render(outcome, Console())
    if outcome.path is None:
        raise typer.Exit(code=1)


def _data(latents, channel_axis, inputs, labels, image_size, clip_seconds, model, encoder, encode_method, allow_global, nesting, batch_size,
          device, max_vectors) -> DataOptions:
    return data_options(latents=latents, channel_axis=channel_axis, inputs=inputs, labels=labels, image_size=image_size, clip_seconds=clip_seconds, model=model,
                        encoder=encoder, encode_method=encode_method, allow_global=allow_global, nesting=nesting,
                        batch_size=batch_size, device=device, max_vectors=max_vectors)


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
    data = _data(latents, channel_axis, inputs, labels, image_size, clip_seconds, model, encoder, encode_method, allow_global, nesting,
                 batch_size, device, max_vectors)
    check_ranges(("--seed", seed), ("--iters", iters), ("--memory-budget-mb", memory_budget_mb))

    err = Console(stderr=True)

    def fix(state, stack: Stack, lat: api.Latents | None) -> FixResult:
        assert lat is not None  # need_data=True: fix_checkpoint refuses to run without data
        with _lloyd_progress(err) as progress:
            cluster = (distributed.kmeans_across_ranks if distributed.detect() is not None or progress is None
                       else functools.partial(kmeans, progress=progress))
            return kmeans_reinit(state, stack, lat.x, iters=iters, seed=seed, budget_bytes=memory_budget_mb << 20,
                                 cluster=cluster)

    _run(checkpoint=checkpoint, out=out, in_place=in_place, data=data, codebook=codebook, encoder_from=encoder_from,
         need_data=True, budget_mb=memory_budget_mb, fix=fix, across_ranks=True, metric=metric, modes=modes,
         force=force, as_json=as_json,
         encoder_prefixes=tuple(encoder_prefix or ("encoder",)), with_decoder=with_decoder,
         decoder_prefixes=tuple(decoder_prefix or ("decoder",)))


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
    data = _data(latents, channel_axis, inputs, labels, image_size, clip_seconds, model, encoder, encode_method, allow_global, nesting,
                 batch_size, device, max_vectors)
    check_ranges(("--seed", seed), ("--iters", iters), ("--min-count", min_count), ("--memory-budget-mb", memory_budget_mb))

    err = Console(stderr=True)

    def fix(state, stack: Stack, lat: api.Latents | None) -> FixResult:
        assert lat is not None  # need_data=True: fix_checkpoint refuses to run without data
        with _lloyd_progress(err) as progress:
            return revive_stack(state, stack, lat.x, min_count=min_count, iters=iters, seed=seed,
                                budget_bytes=memory_budget_mb << 20, progress=progress)

    _run(checkpoint=checkpoint, out=out, in_place=in_place, data=data, codebook=codebook, encoder_from=None,
         need_data=True, budget_mb=memory_budget_mb, fix=fix, metric=metric, modes=modes, force=force, as_json=as_json)


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
    if mode not in ("exact", "paper"):
        raise UsageError(f"--mode {mode!r} is not one of exact, paper.")
    if layout not in ("vqp", "official"):
        raise UsageError(f"--layout {layout!r} is not one of vqp, official.")
    data = _data(latents, channel_axis, inputs, labels, image_size, clip_seconds, model, encoder, encode_method, allow_global, nesting,
                 batch_size, device, max_vectors)
    check_ranges(("--seed", seed), ("--memory-budget-mb", memory_budget_mb))

    def fix(state, stack: Stack, lat: api.Latents | None) -> FixResult:
        total = FixResult()
        for cb in stack.codebooks:
            total.merge(to_simvq(state, cb, mode=mode, layout=layout, seed=seed))  # type: ignore[arg-type]
        return total

    _run(checkpoint=checkpoint, out=out, in_place=in_place, data=data, codebook=codebook, encoder_from=None,
         need_data=False, budget_mb=memory_budget_mb, fix=fix, metric=metric, modes=modes, force=force, as_json=as_json)
