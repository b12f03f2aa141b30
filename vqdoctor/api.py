"""The Python API the CLI is a thin layer over. Usable from a notebook or a training loop::

    import vqdoctor
    report = vqdoctor.inspect("model.safetensors", data=vqdoctor.DataOptions(latents=Path("z.npy")))
    report.codebooks[0].usage.utilization
"""

from __future__ import annotations

import os
from collections import ChainMap
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vqdoctor import distributed
from vqdoctor.codebooks import config_from_metadata, find_codebooks, no_codebook_error, override_metric, select
from vqdoctor.core.codebook import Discovery
from vqdoctor.core.device import pick_device
from vqdoctor.core.gathered import Statistics, check_codebooks, identities, merge_stats
from vqdoctor.core.kmeans import LloydProgress
from vqdoctor.diagnose import build_report, diagnose, gather
from vqdoctor.errors import DataError, InputFileError, UsageError
from vqdoctor.fixes import FixResult
from vqdoctor.fixes.values import Fix
from vqdoctor.io.atomic import removed_on_signal
from vqdoctor.io.checkpoint_types import Checkpoint
from vqdoctor.io.checkpoints import load_checkpoint
from vqdoctor.io.data import InputSource, LatentSource
from vqdoctor.io.encoders import (
    Encoder,
    data_from_metadata,
    ignored_data_note,
)
from vqdoctor.io.stats_file import load_stats, save_stats
from vqdoctor.io.stream import Latents, VectorStream, collect_latents, memory_stream, open_stream
from vqdoctor.io.transplant import Transplant, plan_transplant, staged, with_arch
from vqdoctor.io.writers import commit_verified, refuse_overlap, remove_output, unverified_path, write_checkpoint
from vqdoctor.options import AnalysisOptions, DataOptions
from vqdoctor.remedies import data_args
from vqdoctor.repair import compare, infer_modes_once, summary
from vqdoctor.report.fix_result import FixOutcome
from vqdoctor.report.schema import CheckpointInfo, Report

ProgressFn = Callable[[int], None]


def load(path: str | Path, *, allow_globals: tuple[str, ...] = (), nesting: str | None = None) -> Checkpoint:
    """Open a checkpoint (safetensors, safe pickle, HF folder, npy/npz; a hub id ``org/name`` in the
    user's Hugging Face cache, never downloaded) without running code."""
    from vqdoctor.adapters.hub import cached_snapshot

    return load_checkpoint(cached_snapshot(path) or path, allow_globals=allow_globals, nesting=nesting)


def discover(ckpt: Checkpoint, *, pattern: str | None = None, require: bool = True, metric: str = "auto") -> Discovery:
    """Every codebook of ``ckpt`` (filtered by the ``pattern`` glob), compared by ``metric``
    (``"auto"``: as detected); with ``require`` an empty result is a CodebookNotFoundError that
    lists the candidates."""
    found = _find(ckpt, pattern=pattern, metric=metric)
    if require and not found.stacks:
        raise no_codebook_error(ckpt.state, found)
    _check_codebooks_finite(ckpt, found)
    return found


def _find(ckpt: Checkpoint, *, pattern: str | None, metric: str) -> Discovery:
    found = find_codebooks(ckpt.state, config=config_from_metadata(ckpt.metadata))
    if pattern is not None:
        found = select(found, pattern, state=ckpt.state)
    return override_metric(found, metric)


def list_codebooks(path: str | Path, *, pattern: str | None = None, metric: str = "auto",
                   allow_globals: tuple[str, ...] = (), nesting: str | None = None) -> tuple[Checkpoint, Discovery]:
    """What ``vqdoctor ls`` lists: the checkpoint and every codebook found in it (filtered by the
    ``pattern`` glob, compared by ``metric``), none required and none refused (a codebook with
    NaN codes is listed; :func:`discover` refuses it for an analysis)."""
    ckpt = load(path, allow_globals=allow_globals, nesting=nesting)
    return ckpt, _find(ckpt, pattern=pattern, metric=metric)


def _check_codebooks_finite(ckpt: Checkpoint, found: Discovery) -> None:
    """A codebook with NaN/Inf codes cannot be analysed (an SVD of it fails): one clean error."""
    for cb in found.codebooks:
        bad = int((~torch.isfinite(cb.codes)).sum())
        if bad:
            key = cb.keys.get("codes", cb.name)
            raise InputFileError(
                f"Codebook {cb.name} ({key}) in {ckpt.path} holds {bad:,} NaN/Inf value(s) among its "
                f"{cb.codes.numel():,}.",
                hint="The training diverged or the file is damaged: use an earlier checkpoint, or repair those "
                "codes (e.g. torch.nan_to_num) before analysing it.",
            )


def checkpoint_info(ckpt: Checkpoint) -> CheckpointInfo:
    return CheckpointInfo(path=str(ckpt.path), format=ckpt.format, nesting=ckpt.describe_nesting(), fingerprint=ckpt.fingerprint)


# --------------------------------------------------------------------------------------------
# One session per checkpoint (inspect, check, fix, trend): the checkpoint loaded, its codebooks
# found, the device picked; the data opened as a stream over it.


@dataclass(frozen=True)
class Session:
    """A checkpoint opened for one analysis: its codebooks and the device to compute on."""

    ckpt: Checkpoint
    found: Discovery
    device: torch.device

    @property
    def info(self) -> CheckpointInfo:
        return checkpoint_info(self.ckpt)

    def stream(self, data: DataOptions, *, latents: LatentSource | None = None, inputs: InputSource | None = None,
               encoder: Encoder | None = None) -> VectorStream | None:
        """The vectors of ``data`` (None: no data, data-free); sources already opened go first."""
        return open_stream(self.ckpt, data, device=self.device, latents=latents, inputs=inputs, encoder=encoder)


def open_session(checkpoint: str | Path | Checkpoint, *, data: DataOptions = DataOptions(),
                 analysis: AnalysisOptions = AnalysisOptions(), device: torch.device | None = None) -> Session:
    """Load ``checkpoint`` (unless already loaded) with the data options' ``allow_globals`` and
    ``nesting``, find the codebooks ``analysis`` selects, pick the device (``device`` or
    ``data.device``)."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load(checkpoint, allow_globals=data.allow_globals, nesting=data.nesting)
    found = discover(ckpt, pattern=analysis.codebook, metric=analysis.metric)
    return Session(ckpt=ckpt, found=found, device=device if device is not None else pick_device(data.device))


def inspect(
    checkpoint: str | Path | Checkpoint,
    *,
    data: DataOptions = DataOptions(),
    analysis: AnalysisOptions = AnalysisOptions(),
    progress: ProgressFn | None = None,
) -> Report:
    """Diagnose every codebook of a checkpoint over the given data."""
    session = open_session(checkpoint, data=data, analysis=analysis)
    stream = session.stream(data)
    report = diagnose(checkpoint=session.info, discovery=session.found, stream=stream, options=analysis,
                      device=session.device, progress=progress,
                      remedy_args=data_args(data, metric=analysis.metric))
    ignored = ignored_data_note(session.ckpt) if stream is None else None
    return report if ignored is None else replace(report, notes=[*report.notes, ignored])


# --------------------------------------------------------------------------------------------
# Run modes: one process, one shard of the data (--shard i/n, statistics saved for a later
# merge), or one rank of a torchrun job (statistics reduced over the ranks; rank 0 reports).


@dataclass(frozen=True)
class Run:
    """Where this process runs: alone (``world == 1``) or as rank ``rank`` of a torchrun job.
    ``data`` holds this process's slice (under torchrun: ``shard = (rank, world)``)."""

    data: DataOptions
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """The process that writes outputs and reports (rank 0, or the only one)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


@contextmanager
def run_mode(data: DataOptions) -> Iterator[Run]:
    """The run mode of this process: under torchrun (WORLD_SIZE > 1) join the process group for
    the duration and read the rank's slice (``--shard`` is refused there); else run alone."""
    device = pick_device(data.device)
    with distributed.session(device) as job:
        if job is None:
            yield Run(data=data, device=device)
            return
        env, dev = job
        if data.shard is not None:
            raise UsageError(f"--shard {data.shard[0]}/{data.shard[1]} cannot be used under torchrun: "
                             f"each of the {env.world_size} ranks already takes its own slice.",
                             "Drop --shard, or run without torchrun.")
        yield Run(data=replace(data, shard=env.shard), device=dev, rank=env.rank, world=env.world_size)


def is_main_process() -> bool:
    """False only on a torchrun rank other than 0 (the processes that report nothing)."""
    env = distributed.detect()
    return env is None or env.is_main


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyse` did: the ``report`` to show (None where there is nothing more to show:
    statistics only, or a rank other than 0), the ``statistics`` when gathered as statistics
    (a shard, torchrun, ``save_stats``) and where they were ``saved``."""

    report: Report | None
    statistics: Statistics | None = None
    saved: Path | None = None


def analyse(
    checkpoint: str | Path,
    *,
    data: DataOptions = DataOptions(),
    analysis: AnalysisOptions = AnalysisOptions(),
    save_stats: Path | None = None,
    want_report: bool = True,
    progress: ProgressFn | None = None,
) -> Analysis:
    """The analysis of ``vqdoctor inspect`` / ``check`` in whatever mode this process runs:
    one pass in one process (the plain :func:`inspect`); the statistics of ``data.shard``, or of
    every rank reduced under torchrun, saved to ``save_stats`` when given and turned into the
    report (unless ``want_report`` is off and they were saved). ``progress`` is called on the
    main process only."""
    if save_stats is None and data.shard is None and distributed.detect() is None:
        return Analysis(report=inspect(checkpoint, data=data, analysis=analysis, progress=progress))
    with run_mode(data) as run:
        ckpt = load(checkpoint, allow_globals=data.allow_globals, nesting=data.nesting)
        stats = gather_statistics(ckpt, data=run.data, analysis=analysis, progress=progress if run.is_main else None,
                                  device=run.device if run.distributed else None)
        if not run.is_main:
            return Analysis(report=None, statistics=stats)
        if save_stats is not None:
            save_statistics(stats, save_stats)
            if not want_report:
                return Analysis(report=None, statistics=stats, saved=save_stats)
        return Analysis(report=report_from_statistics(stats, checkpoint=ckpt), statistics=stats, saved=save_stats)


# --------------------------------------------------------------------------------------------
# Scale: statistics gathered in shards or under torch.distributed, saved, merged, reported
# (DESIGN.md "Scale"; docs/scaling.md).


def gather_statistics(
    checkpoint: str | Path | Checkpoint,
    *,
    data: DataOptions = DataOptions(),
    analysis: AnalysisOptions = AnalysisOptions(),
    progress: ProgressFn | None = None,
    device: torch.device | None = None,
) -> Statistics:
    """The mergeable statistics of ``data`` (or of its slice ``data.shard``), without the report.

    Inside an initialised torch.distributed process group (torchrun) each rank reads slice
    ``(rank, world)`` (``data.shard`` must be that or None) and the statistics are summed over
    the ranks: every rank returns the totals. Turn them into a report with
    :func:`report_from_statistics`, or save them with :func:`save_statistics` and merge files
    later with :func:`load_statistics`."""

    rank, world = distributed.world()
    if world > 1:
        if data.shard not in (None, (rank, world)):
            raise UsageError(f"Under torchrun (rank {rank} of {world}) the data is split by rank; --shard {data.shard[0]}/{data.shard[1]} "
                            "cannot be combined with it.", "Drop --shard when running under torchrun.")
        data = replace(data, shard=(rank, world))
    session = open_session(checkpoint, data=data, analysis=analysis, device=device)
    stream = session.stream(data)
    if stream is None:
        raise DataError(f"Statistics need data, and none was given for {session.ckpt.path}.",
                        "Pass --latents PATH, or --inputs PATH with an encoder.")
    gathered = gather(discovery=session.found, stream=stream, options=analysis, device=session.device, progress=progress)
    if world > 1:
        gathered = distributed.reduce_gathered(gathered)
        shards, count = tuple(range(world)), world
    elif data.shard is not None:
        shards, count = (data.shard[0],), data.shard[1]
    else:
        shards, count = (0,), 1
    return Statistics(checkpoint=session.info, codebooks=identities(session.found), options=analysis,
                      gathered=gathered, shards=shards, shard_count=count, nesting=data.nesting)


def save_statistics(stats: Statistics, path: str | Path) -> Path:
    """Write statistics to a file (safetensors, schema ``vqdoctor.stats/1``) for a later merge."""
    return save_stats(stats, path)


def load_statistics(*paths: str | Path) -> Statistics:
    """Read one or more statistics files and add them up (refusing files of different
    checkpoints, codebooks, options or data, and shards given twice)."""
    if not paths:
        raise UsageError("No statistics files given.", "Pass the files written by inspect --save-stats.")
    parts = [load_stats(p) for p in paths]
    return merge_stats(parts, names=[str(p) for p in paths])


def report_from_statistics(
    stats: Statistics,
    *,
    checkpoint: str | Path | Checkpoint | None = None,
    allow_globals: tuple[str, ...] = (),
    nesting: str | None = None,
) -> Report:
    """The report of (merged) statistics: the one a single pass over the same data gives.

    Nothing the statistics file names is trusted: with ``checkpoint`` (the user's own path or
    object, loaded with the user's ``allow_globals`` and ``nesting`` only) the codebooks come from
    it, and its sha256 must match the recorded fingerprint and its codebooks the recorded ones.
    Without it no file is opened: the report holds what the statistics alone give (usage,
    allocation over live codes, embeddings collapse) and ``null`` geometry/EMA/W, with a note.
    Statistics of only some shards give a report of those shards, with a note."""
    from vqdoctor.stats_report import report_from_stats_alone, stats_remedy

    gathered = stats.gathered
    if not stats.complete:
        missing = sorted(set(range(stats.shard_count)) - set(stats.shards))
        gathered = replace(gathered, notes=[*gathered.notes, f"These statistics cover {stats.describe_shards()} only "
                                            f"(missing: {', '.join(map(str, missing))}); usage counts are of that part of the data."])
    if checkpoint is None:
        if allow_globals or nesting is not None:
            raise UsageError("--allow-global and --nesting apply to the checkpoint given with --checkpoint PATH.",
                             "Pass --checkpoint PATH (the file the statistics were made from), or drop them.")
        return report_from_stats_alone(replace(stats, gathered=gathered))
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load(checkpoint, allow_globals=allow_globals, nesting=nesting)
    if ckpt.fingerprint != stats.checkpoint.fingerprint:
        raise UsageError(
            f"Checkpoint {ckpt.path} (sha256 {ckpt.fingerprint[:12]}) is not the one the statistics were made from "
            f"({stats.checkpoint.path}, sha256 {stats.checkpoint.fingerprint[:12]}).",
            "Pass the exact checkpoint file the shards were gathered with (--checkpoint PATH).")
    found = discover(ckpt, pattern=stats.options.codebook, metric=stats.options.metric)
    check_codebooks(stats, found, checkpoint=str(ckpt.path))
    info = checkpoint_info(ckpt)
    return build_report(checkpoint=info, discovery=found, gathered=gathered, options=stats.options,
                        remedy=stats_remedy(info.format, info.path))


# --------------------------------------------------------------------------------------------
# Repairs (`vqdoctor fix`): gather the vectors, run a fix on every stack, write the output to a
# temporary file, verify that file as it will run (vqdoctor/repair.py), then move it into place.


def report_on_latents(ckpt: Checkpoint, discovery: Discovery, lat: Latents, *, analysis: AnalysisOptions,
                      batch_size: int = 65536) -> Report:
    """The `inspect` report of ``discovery`` over vectors already in memory."""
    return diagnose(checkpoint=checkpoint_info(ckpt), discovery=discovery, stream=memory_stream(lat, batch_size),
                    options=analysis, device=lat.x.device)


LloydScope = Callable[[], AbstractContextManager["LloydProgress | None"]]


def _matching(found: Discovery, before: Discovery) -> Discovery:
    """The stacks of the repaired checkpoint that hold the codebooks we repaired."""
    names = {cb.name for cb in before.codebooks}
    picked = tuple(s for s in found.stacks if any(cb.name in names for cb in s.codebooks))
    return Discovery(stacks=picked) if picked else found


def _with_modes(lat: Latents, modes: tuple[np.ndarray, list[str], str] | None) -> Latents:
    if modes is None or lat.modes is not None:
        return lat
    return replace(lat, modes=modes[0], mode_names=modes[1], mode_source=modes[2])


def fix_checkpoint(
    checkpoint: str | Path,
    *,
    fix: Fix,
    out: Path | None = None,
    in_place: bool = False,
    data: DataOptions = DataOptions(),
    analysis: AnalysisOptions = AnalysisOptions(projection="none"),
    force: bool = False,
    lloyd_progress: LloydScope | None = None,
) -> FixOutcome:
    """Repair ``checkpoint`` with ``fix`` (a :class:`~vqdoctor.fixes.KMeansFix`,
    :class:`~vqdoctor.fixes.ReviveFix` or :class:`~vqdoctor.fixes.SimVQFix` value) into ``out``
    (same format; the input is untouched unless ``in_place``, which keeps a backup) and verify
    the output as it will run. Returns the :class:`~vqdoctor.report.fix_result.FixOutcome`.

    ``fix.encoder_from``: a pretrained checkpoint (e.g. the autoencoder trained without VQ) whose
    encoder modules (and decoder ones with ``with_decoder``) are copied into the output, matched
    by key (vqdoctor/io/transplant.py); the fix sees the vectors of that encoder. The output is
    written to a temporary file, re-loaded, re-encoded with the encoder in it (or the user's
    latents) and re-assigned with each quantizer's own rule; that is the after-state. When it is
    worse than the before-state (vqdoctor/repair.py), the temporary file is removed and ``path``
    is None, unless ``force``. ``lloyd_progress``: a context manager factory entered around each
    stack's fix, yielding the per-iteration k-means callback (or None).

    Under torchrun (fixes with ``across_ranks``: ``KMeansFix`` reduces its statistics over the
    ranks), every rank encodes its slice of the data, the fix runs on every rank together, and
    rank 0 writes the file and measures before/after on its own slice; other ranks return
    ``before=after=None``."""
    encoder_from = fix.encoder_from
    if out is None and not in_place:
        raise UsageError("Say where to write the repaired checkpoint: --out NEW (or --in-place, which keeps a backup).")
    if encoder_from is not None and data.latents is not None:
        raise UsageError("--encoder-from encodes raw data: pass --inputs (not --latents).")
    target = Path(checkpoint) if out is None else out
    # the output is never one of the inputs (checkpoint, data, labels, encoders), nor inside one
    refuse_overlap(target, [p for p in (Path(checkpoint), data.latents, data.inputs, data.labels, data.encoder,
                                        encoder_from) if p is not None], allow_same=Path(checkpoint) if in_place else None)
    if in_place and out is not None and not (out.exists() and os.path.samefile(out, checkpoint)):
        raise UsageError(f"--in-place writes over the input {checkpoint}, but the output given is {out}.",
                         "Drop --in-place to write a new file, or give the input path as the output.")
    with run_mode(data) as run:
        if run.distributed and not fix.across_ranks:
            raise UsageError("This fix does not run under torchrun (only `fix kmeans` reduces over ranks).",
                             "Run it as one process.")
        return _fix_in(checkpoint, fix=fix, target=target, in_place=in_place, run=run, analysis=analysis,
                       force=force, lloyd_progress=lloyd_progress)


def _fix_in(checkpoint: str | Path, *, fix: Fix, target: Path, in_place: bool, run: Run, analysis: AnalysisOptions,
            force: bool, lloyd_progress: LloydScope | None) -> FixOutcome:
    """:func:`fix_checkpoint` in its run mode (``run``: this process alone or a torchrun rank)."""
    data, device = run.data, run.device
    encoder_from = fix.encoder_from
    session = open_session(checkpoint, data=data, analysis=analysis, device=device)
    ckpt, found = session.ckpt, session.found
    if data.latents is None and data.inputs is None and data_from_metadata(ckpt) is not None:
        # the checkpoint's own data, resolved once: the output (written elsewhere) is measured on it too
        data = replace(data, inputs=data_from_metadata(ckpt))
    source = None
    transplant: Transplant | None = None
    if encoder_from is not None:
        source = load(encoder_from, allow_globals=data.allow_globals)
        transplant = plan_transplant(ckpt, source, parts=fix.transplant_parts())
    runnable = with_arch(ckpt, source)  # the model as it is (an encoder description lent by the source)
    lat_before = collect_latents(runnable, data, device=device)
    modes = None
    if lat_before is not None and lat_before.modes is None and run.is_main:
        modes = infer_modes_once(lat_before.x, subsample=analysis.subsample, seed=analysis.seed)
    lat_before = _with_modes(lat_before, modes) if lat_before is not None else None
    staged_ckpt = staged(ckpt, transplant.tensors, arch_from=source) if transplant is not None else runnable
    lat = lat_before
    if transplant is not None:
        staged_lat = collect_latents(staged_ckpt, data, device=device)
        lat = None if staged_lat is None else _with_modes(staged_lat, modes)
    if lat is None and fix.needs_data:
        raise DataError(
            "This fix needs data: the vectors that reach the quantizer.",
            "Pass --latents FILE, or --inputs with --model/--encoder (or --encoder-from PRETRAINED).",
        )
    result = FixResult()
    for stack in found.stacks:  # later stacks see the earlier stacks' updates
        with (lloyd_progress() if lloyd_progress is not None else nullcontext(None)) as progress:
            state = ChainMap(result.updates, staged_ckpt.state)  # type: ignore[arg-type]  # read only: any Mapping does
            result.merge(fix.apply(state, stack, None if lat is None else lat.x, progress=progress))
    if not result.updates and not result.remove and transplant is None:
        raise UsageError("Nothing to change: " + (" ".join(result.notes) or "no codebook needed this fix."))
    if not run.is_main:
        return FixOutcome(path=target, notes=list(result.notes), before=None, after=None, target=target)
    notes = (transplant.notes() if transplant is not None else []) + list(result.notes)
    if run.distributed and lat is not None:
        notes.append(f"k-means ran over all {run.world} ranks; before/after are measured on "
                     f"rank 0's slice ({lat.x.shape[0]:,} vectors).")
    if modes is not None:
        notes.append(f"Data modes {modes[2]} ({len(modes[1])} modes), used for both tables.")
    updates = {**(transplant.tensors if transplant is not None else {}), **result.updates}
    measure = replace(analysis, codebook=None)
    before = report_on_latents(runnable, found, lat_before, analysis=measure) if lat_before is not None else None
    copied = transplant.copied if transplant else ()
    copied_from = transplant.source if transplant else None
    tmp = unverified_path(target)
    with removed_on_signal(tmp):
        try:
            write_checkpoint(ckpt, tmp, updates=updates, remove=result.remove)
            new_ckpt = with_arch(load(tmp, allow_globals=data.allow_globals, nesting=data.nesting), source)
            after_found = _matching(discover(new_ckpt, require=False, metric=analysis.metric), found)
            after = None
            if lat_before is not None:
                # the vectors as the written model makes them: re-encoded by the encoder in the file
                # (its metadata encoder or the --model factory with its weights), or the user's latents
                lat_after = lat_before if data.latents is not None else collect_latents(new_ckpt, data, device=device)
                lat_after = _with_modes(lat_after, modes) if lat_after is not None else lat_before
                after = report_on_latents(new_ckpt, after_found, lat_after, analysis=measure)
                after = replace(after, checkpoint=replace(after.checkpoint, path=str(target)))
            changes = compare(before, after) if before is not None and after is not None else []
            worse = any(c.worse for c in changes)
            notes += summary(changes)
            if worse and not force:
                notes.append("The verified after-state is worse than the before-state, so nothing was written "
                             "(pass --force to write it anyway).")
                return FixOutcome(path=None, notes=notes, before=before, after=after, copied=copied,
                                  copied_from=copied_from, changes=tuple(changes), worse=True, target=target)
            if worse:
                notes.append("The verified after-state is worse than the before-state; written anyway (--force).")
            written = commit_verified(ckpt, tmp, target, updates=updates, remove=result.remove, in_place=in_place)
        finally:
            remove_output(tmp)
    return FixOutcome(path=written, notes=notes, before=before, after=after, copied=copied, copied_from=copied_from,
                      changes=tuple(changes), worse=worse, target=target)
