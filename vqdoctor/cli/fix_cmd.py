"""`vqdoctor fix kmeans|revive|simvq`: repair a checkpoint, write a new file, show before/after.

The orchestration helpers below (``_gather``, ``_apply``, ``_usage_rows``) are marked for the lead
to move into ``vqdoctor.api`` (``api.fix(...)``); the commands only parse, call and render.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from vqdoctor import api
from vqdoctor.cli.app import app
from vqdoctor.cli.common import (
    AllowGlobalOpt, BatchSizeOpt, BudgetOpt, ChannelAxisOpt, CodebookOpt, DeviceOpt, EncodeMethodOpt,
    EncoderOpt, InputsOpt, LabelsOpt, LatentsOpt, MaxVectorsOpt, ModelOpt, NestingOpt, SeedOpt, data_options,
)
from vqdoctor.cli.errors import translate_errors
from vqdoctor.codebooks.model import Discovery, Stack
from vqdoctor.core.chain import run_stack
from vqdoctor.core.device import pick_device
from vqdoctor.core.usage import UsageStats
from vqdoctor.errors import DataError, UsageError
from vqdoctor.fixes import FixResult, kmeans_reinit, revive_stack, to_simvq
from vqdoctor.io.checkpoint_types import Checkpoint
from vqdoctor.io.writers import write_checkpoint
from vqdoctor.options import DataOptions

fix_app = typer.Typer(
    help="Repair a checkpoint: k-means re-init, revive dead codes, convert to SimVQ. Writes a new file.",
    no_args_is_help=True,
)
app.add_typer(fix_app, name="fix")

OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Where to write the repaired checkpoint (same format as the input).", rich_help_panel="Output")]
InPlaceOpt = Annotated[bool, typer.Option("--in-place", help="Overwrite the input (a backup NAME.bak is kept).", rich_help_panel="Output")]
IterOpt = Annotated[int, typer.Option("--iters", min=0, help="Lloyd iterations of k-means.", rich_help_panel="Fix")]


# ---------------------------------------------------------------------------------------------
# glue (for the lead: move into vqdoctor.api as api.fix_kmeans / fix_revive / fix_simvq)


@dataclass
class Latents:
    x: torch.Tensor  # (N, D) on the device
    modes: torch.Tensor | None  # (N,) int64 mode id per vector (labels), or None
    description: str


def _gather(ckpt: Checkpoint, data: DataOptions, device: torch.device, *, required: bool) -> Latents | None:
    """All vectors of the data options as one tensor (k-means needs them together)."""
    stream = api.open_stream(ckpt, data, device=device)
    if stream is None:
        if required:
            raise DataError(
                "This fix needs data: the vectors that reach the quantizer.",
                "Pass --latents FILE, or --inputs with --model/--encoder (or --encoder-from PRETRAINED).",
            )
        return None
    xs, modes = [], []
    labels = stream.labels
    for x, sample, _ in stream.batches():
        xs.append(x.to(device=device, dtype=torch.float32))
        if labels is not None:
            modes.append(torch.as_tensor(np.asarray(labels)[sample.cpu().numpy()], dtype=torch.int64))
    if not xs:
        raise DataError(f"No vectors in {stream.description}.", "Pass non-empty data.")
    x = torch.cat(xs)
    return Latents(x=x, modes=torch.cat(modes) if modes else None, description=stream.description)


def _apply(ckpt: Checkpoint, disc: Discovery, fix: Callable[[object, Stack], FixResult]) -> FixResult:
    """Run ``fix`` on every stack; later stacks see the earlier stacks' updates."""
    total = FixResult()
    for stack in disc.stacks:
        total.merge(fix(ChainMap(total.updates, ckpt.state), stack))
    return total


@dataclass
class Row:
    name: str
    utilization: float
    perplexity: float
    dead: int
    size: int
    mse: float | None
    allocation_tv: float | None


def _usage_rows(disc: Discovery, lat: Latents | None, budget_bytes: int) -> dict[str, Row]:
    """Usage per codebook on the latents: nearest codes + counting."""
    if lat is None:
        return {}
    rows: dict[str, Row] = {}
    modes_n = int(lat.modes.max()) + 1 if lat.modes is not None and lat.modes.numel() else None
    for stack in disc.stacks:
        stats: dict[str, UsageStats] = {}
        step = 65536
        for start in range(0, lat.x.shape[0], step):
            xb = lat.x[start : start + step]
            for out in run_stack(stack, xb, budget_bytes=budget_bytes):
                cb = out.codebook
                st = stats.setdefault(cb.name, UsageStats.empty(cb.size, cb.dim, modes=modes_n, metric=cb.metric))
                m = lat.modes[start : start + step].to(out.rows.device)[out.rows] if modes_n else None
                st.update(out.idx, out.sq_err, out.vectors, modes=m)
        for name, st in stats.items():
            u = st.compute()
            rows[name] = Row(name, u.utilization, u.perplexity, u.dead_codes, st.size, u.quantization_mse,
                             _allocation_tv(st.mode_counts))
    return rows


def _allocation_tv(mode_counts: torch.Tensor | None) -> float | None:
    """Total variation between code shares and data shares (each used code owned by its top mode)."""
    if mode_counts is None:
        return None
    mc = mode_counts.cpu().to(torch.float64)  # (K, M)
    used = mc.sum(1) > 0
    if not bool(used.any()):
        return None
    owner = mc[used].argmax(1)
    code_share = torch.bincount(owner, minlength=mc.shape[1]).to(torch.float64) / int(used.sum())
    data_share = mc.sum(0) / mc.sum()
    return float(0.5 * (code_share - data_share).abs().sum())


def _match_after(before: Discovery, after_ckpt: Checkpoint, pattern: str | None) -> Discovery:
    found = api.discover(after_ckpt, require=False)
    names = {cb.name for cb in before.codebooks}
    picked = [s for s in found.stacks if any(cb.name in names for cb in s.codebooks)]
    if picked:
        return Discovery(stacks=tuple(picked))
    if pattern is not None:
        try:
            return api.discover(after_ckpt, pattern=pattern)
        except UsageError:
            pass
    return found


# ---------------------------------------------------------------------------------------------
# rendering


def _fmt(v: float | int | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _render(before: dict[str, Row], after: dict[str, Row], notes: list[str], out: Path, console: Console) -> None:
    err = Console(stderr=True)
    for note in notes:
        err.print(f"• {note}", markup=False, highlight=False)
    if before or after:
        table = Table(title="Before → after (same data)")
        for col in ("codebook", "utilization", "perplexity", "dead codes", "quant. MSE", "allocation TV"):
            table.add_column(col, justify="left" if col == "codebook" else "right")
        a_rows = list(after.values())
        for i, (name, b) in enumerate(before.items()):
            a = after.get(name) or (a_rows[i] if i < len(a_rows) else None)

            def pair(get: Callable[[Row], object], spec: str) -> str:
                return f"{_fmt(get(b), spec)} → {_fmt(get(a), spec) if a else '—'}"  # type: ignore[arg-type]

            table.add_row(name, pair(lambda r: r.utilization, ".3f"), pair(lambda r: r.perplexity, ".1f"),
                          pair(lambda r: r.dead, "d"), pair(lambda r: r.mse, ".4g"), pair(lambda r: r.allocation_tv, ".3f"))
        console.print(table)
    console.print(f"Wrote {out}")


def _run(
    *, checkpoint: Path, out: Path | None, in_place: bool, data: DataOptions, codebook: str | None,
    encoder_from: Path | None, need_data: bool, budget_mb: int, fix: Callable[[object, Stack, Latents | None], FixResult],
) -> None:
    if out is None and not in_place:
        raise UsageError("Say where to write the repaired checkpoint: --out NEW (or --in-place, which keeps a backup).")
    target = checkpoint if (in_place and out is None) else out
    assert target is not None
    device = pick_device(data.device)
    budget = budget_mb << 20
    ckpt = api.load(checkpoint, allow_globals=data.allow_globals, nesting=data.nesting)
    disc = api.discover(ckpt, pattern=codebook)
    source = api.load(encoder_from, allow_globals=data.allow_globals) if encoder_from is not None else ckpt
    lat = _gather(source, data, device, required=need_data)
    result = _apply(ckpt, disc, lambda state, stack: fix(state, stack, lat))
    if not result.updates and not result.remove:
        raise UsageError("Nothing to change: " + (" ".join(result.notes) or "no codebook needed this fix."))
    before = _usage_rows(disc, lat, budget)
    written = write_checkpoint(ckpt, target, updates=result.updates, remove=result.remove, in_place=in_place)
    new_ckpt = api.load(written, allow_globals=data.allow_globals, nesting=data.nesting)
    after = _usage_rows(_match_after(disc, new_ckpt, codebook), lat, budget)
    _render(before, after, result.notes, written, Console())


def _data(latents, channel_axis, inputs, labels, model, encoder, encode_method, allow_global, nesting, batch_size,
          device, max_vectors) -> DataOptions:
    return data_options(latents=latents, channel_axis=channel_axis, inputs=inputs, labels=labels, model=model,
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
    model: ModelOpt = None,
    encoder: EncoderOpt = None,
    encode_method: EncodeMethodOpt = None,
    encoder_from: Annotated[Optional[Path], typer.Option("--encoder-from", help="A pretrained checkpoint (e.g. the autoencoder trained without VQ) whose encoder encodes --inputs.", rich_help_panel="Encoder")] = None,
    allow_global: AllowGlobalOpt = None,
    nesting: NestingOpt = None,
    codebook: CodebookOpt = None,
    iters: IterOpt = 20,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 8192,
    max_vectors: MaxVectorsOpt = None,
    memory_budget_mb: BudgetOpt = 256,
    in_place: InPlaceOpt = False,
) -> None:
    """Re-initialise codebooks by k-means (k = codebook size) on the encoder's outputs."""
    data = _data(latents, channel_axis, inputs, labels, model, encoder, encode_method, allow_global, nesting,
                 batch_size, device, max_vectors)
    if encoder_from is not None and latents is not None:
        raise UsageError("--encoder-from encodes raw data: pass --inputs (not --latents).")

    def fix(state, stack: Stack, lat: Latents | None) -> FixResult:
        assert lat is not None
        return kmeans_reinit(state, stack, lat.x, iters=iters, seed=seed, budget_bytes=memory_budget_mb << 20)

    _run(checkpoint=checkpoint, out=out, in_place=in_place, data=data, codebook=codebook, encoder_from=encoder_from,
         need_data=True, budget_mb=memory_budget_mb, fix=fix)


@fix_app.command("revive")
@translate_errors
def revive_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or Hugging Face folder.")],
    out: OutOpt = None,
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
    min_count: Annotated[int, typer.Option("--min-count", min=1, help="A code used fewer times than this is dead and gets replaced.", rich_help_panel="Fix")] = 1,
    iters: IterOpt = 20,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 8192,
    max_vectors: MaxVectorsOpt = None,
    memory_budget_mb: BudgetOpt = 256,
    in_place: InPlaceOpt = False,
) -> None:
    """Replace only the dead codes with centroids of the worst-served regions; live codes stay bit-exact."""
    data = _data(latents, channel_axis, inputs, labels, model, encoder, encode_method, allow_global, nesting,
                 batch_size, device, max_vectors)

    def fix(state, stack: Stack, lat: Latents | None) -> FixResult:
        assert lat is not None
        return revive_stack(state, stack, lat.x, min_count=min_count, iters=iters, seed=seed,
                            budget_bytes=memory_budget_mb << 20)

    _run(checkpoint=checkpoint, out=out, in_place=in_place, data=data, codebook=codebook, encoder_from=None,
         need_data=True, budget_mb=memory_budget_mb, fix=fix)


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
    model: ModelOpt = None,
    encoder: EncoderOpt = None,
    encode_method: EncodeMethodOpt = None,
    allow_global: AllowGlobalOpt = None,
    nesting: NestingOpt = None,
    codebook: CodebookOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 8192,
    max_vectors: MaxVectorsOpt = None,
    memory_budget_mb: BudgetOpt = 256,
    in_place: InPlaceOpt = False,
) -> None:
    """Rewrite codebooks as SimVQ (codes = C·Wᵀ, C frozen). Data is optional (for before/after)."""
    if mode not in ("exact", "paper"):
        raise UsageError(f"--mode {mode!r} is not one of exact, paper.")
    if layout not in ("vqp", "official"):
        raise UsageError(f"--layout {layout!r} is not one of vqp, official.")
    data = _data(latents, channel_axis, inputs, labels, model, encoder, encode_method, allow_global, nesting,
                 batch_size, device, max_vectors)

    def fix(state, stack: Stack, lat: Latents | None) -> FixResult:
        total = FixResult()
        for cb in stack.codebooks:
            total.merge(to_simvq(state, cb, mode=mode, layout=layout, seed=seed))  # type: ignore[arg-type]
        return total

    _run(checkpoint=checkpoint, out=out, in_place=in_place, data=data, codebook=codebook, encoder_from=None,
         need_data=False, budget_mb=memory_budget_mb, fix=fix)
