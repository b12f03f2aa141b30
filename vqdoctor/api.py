"""The Python API the CLI is a thin layer over. Usable from a notebook or a training loop::

    import vqdoctor
    report = vqdoctor.inspect("model.safetensors", data=vqdoctor.DataOptions(latents=Path("z.npy")))
    report.codebooks[0].usage.utilization
"""

from __future__ import annotations

import math
import os
import shutil
from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vqdoctor import distributed
from vqdoctor.codebooks import config_from_metadata, find_codebooks, no_codebook_error, override_metric, select
from vqdoctor.codebooks.model import Discovery, Stack
from vqdoctor.core.device import pick_device
from vqdoctor.core.sketch import SKETCH_DIM, random_projection
from vqdoctor.diagnose import Batch, VectorStream, build_report, diagnose, gather
from vqdoctor.errors import DataError, EncoderError, InputFileError, UsageError, VqdoctorError
from vqdoctor.fixes import FixResult
from vqdoctor.io.atomic import TMP_PREFIX, removed_on_signal
from vqdoctor.io.checkpoint_types import Checkpoint
from vqdoctor.io.checkpoints import load_checkpoint
from vqdoctor.io.data import InputSource, LatentSource, open_inputs, open_latents
from vqdoctor.io.encoders import (
    Encoder,
    data_from_metadata,
    encoder_from_factory,
    encoder_from_file,
    encoder_from_metadata,
    ignored_data_note,
)
from vqdoctor.io.prefetch import prefetch
from vqdoctor.io.stats_file import Statistics, check_codebooks, identities, load_stats, merge_stats, save_stats
from vqdoctor.io.transplant import Copied, Transplant, plan_transplant, staged, with_arch
from vqdoctor.io.writers import refuse_overlap, write_checkpoint
from vqdoctor.options import AnalysisOptions, DataOptions
from vqdoctor.repair import Change, compare, infer_modes_once, summary
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
    found = find_codebooks(ckpt.state, config=config_from_metadata(ckpt.metadata))
    if pattern is not None:
        found = select(found, pattern, state=ckpt.state)
    found = override_metric(found, metric)
    if require and not found.stacks:
        raise no_codebook_error(ckpt.state, found)
    _check_codebooks_finite(ckpt, found)
    return found


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


def _flatten_vectors(z: torch.Tensor, channel_axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder output (b, ..., d, ...) -> vectors (b*P, d) and the local sample of each (b*P,)."""
    b = z.shape[0]
    if z.ndim == 2:
        return z, torch.arange(b, device=z.device)
    z = z.movedim(channel_axis, -1)
    positions = math.prod(z.shape[1:-1])
    return z.reshape(-1, z.shape[-1]), torch.arange(b, device=z.device).repeat_interleave(positions)


def _check_finite(x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        row = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).nonzero()[0])
        raise DataError(f"{what} contains NaN or Inf (first at row {row}).", "Check the encoder and the inputs; vqdoctor analyses finite vectors only.")


def _encoder_for(ckpt: Checkpoint, data: DataOptions, device: torch.device) -> Encoder | None:
    if data.model is not None:
        return encoder_from_factory(data.model, ckpt, method=data.encode_method, device=device)
    if data.encoder is not None:
        return encoder_from_file(data.encoder, device=device)
    described = encoder_from_metadata(ckpt, device=device)
    if described is not None or data.inputs is None:
        return described
    from vqdoctor.adapters import encoder_for  # Hugging Face folders (docs/hf.md)

    return encoder_for(ckpt, inputs=data.inputs, pixel_range=data.pixel_range, device=device)


def open_stream(ckpt: Checkpoint, data: DataOptions, *, device: torch.device,
                latents: LatentSource | None = None, inputs: InputSource | None = None,
                encoder: Encoder | None = None) -> VectorStream | None:
    """Turn the data options into a stream of latents (None: nothing to read, data-free).
    ``latents`` / ``inputs`` / ``encoder``: sources already opened (objects in memory,
    ``vqdoctor.memory``), used instead of the files and encoder the options name."""
    shard = data.shard
    if latents is not None or data.latents is not None:
        src = latents if latents is not None else open_latents(data.latents, channel_axis=data.channel_axis, labels=data.labels)
        raw = _aligned_inputs(data, src.n_samples) if data.inputs is not None else None
        features = None if raw is None else _input_features(raw)

        def latent_batches() -> Iterator[Batch]:
            for x, sample in prefetch(src.batches(data.batch_size, shard=shard, max_vectors=data.max_vectors)):
                if features is None:
                    yield x, sample, None
                else:  # the batch's items' inputs, one row per distinct item in increasing order
                    yield x, sample, features(raw.take(torch.unique(sample).numpy()))

        labels, names = src.labels, src.label_names
        if labels is None and raw is not None:
            labels, names = raw.labels, raw.label_names
        paired = "" if raw is None else f", with inputs {data.inputs} ({raw.n} items, row for row)"
        return VectorStream(
            description=f"latents: {src.path} ({src.n_vectors} vectors of dim {src.dim}){paired}",
            n_samples=src.n_samples, batches=latent_batches, take=src.take, labels=labels,
            label_names=names,
            take_inputs=None if raw is None else (lambda samples: features(raw.take(samples))),
        )

    inputs_path = data.inputs if inputs is None else inputs.path
    notes: list[str] = []
    if inputs_path is None:
        inputs_path = data_from_metadata(ckpt)
        if inputs_path is None:
            return None
        notes.append(f"Data: the checkpoint's own training data {inputs_path} (named in its metadata).")
    encoder = encoder if encoder is not None else _encoder_for(ckpt, data, device)
    if encoder is None:
        raise DataError(
            f"--inputs {inputs_path} needs an encoder, and {ckpt.path} does not describe its own.",
            "Pass --model pkg.module:factory (your model code) or --encoder FILE (TorchScript / torch.export), or give --latents instead.",
        )
    notes.extend(encoder.notes)
    inp = inputs if inputs is not None else open_inputs(inputs_path, labels=data.labels, image_size=data.image_size, clip_seconds=data.clip_seconds)
    channel_axis = data.channel_axis if data.channel_axis is not None else encoder.channel_axis
    per_batch = data.batch_size if len(inp.sample_shape) <= 1 else max(1, min(64, data.batch_size))

    def encode(xb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            with torch.inference_mode():
                z = encoder.fn(xb.to(device))
        except VqdoctorError:  # vqdoctor's own check of the inputs (the Hugging Face adapters): as it is
            raise
        except Exception as err:  # the user's model code: report it as theirs, with the batch shape
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise EncoderError(
                f"The encoder ({encoder.description}) failed on a batch of shape {tuple(xb.shape)} "
                f"from {inputs_path}: {first}",
                "Check that it takes this input shape (an exported program needs a dynamic batch "
                "dimension: torch.export.Dim), or pass --batch-size; VQDOCTOR_DEBUG=1 shows the traceback.",
            ) from err
        if not isinstance(z, torch.Tensor):
            raise EncoderError(f"The encoder ({encoder.description}) returned {type(z).__name__}, not a tensor.",
                               "Pass --encode-method to pick the method or submodule that returns the latents.")
        z = z.float()
        _check_finite(z, f"The encoder's output on {inputs_path}")
        vecs, local = _flatten_vectors(z, channel_axis)
        return vecs, idx.to(vecs.device)[local]

    features = math.prod(inp.sample_shape)
    sketch = random_projection(features) if features > SKETCH_DIM else None
    if sketch is not None:
        notes.append(f"Inputs have {features:,} features: modes and k-NN purity in input space use a seeded "
                     f"{SKETCH_DIM}-d random projection of them (distances kept, Johnson-Lindenstrauss).")

    def input_features(xb: torch.Tensor) -> torch.Tensor:
        flat = xb.reshape(xb.shape[0], -1).float()
        return flat if sketch is None else flat @ sketch

    def input_batches() -> Iterator[Batch]:
        # decode the next batch (images, audio) while this one is encoded and assigned
        for xb, idx in prefetch(inp.batches(per_batch, shard=shard, max_items=data.max_vectors)):
            vecs, sample = encode(xb, idx)
            yield vecs, sample, input_features(xb)

    def take(samples: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        parts, owners = [], []
        for start in range(0, len(samples), per_batch):
            chunk = samples[start : start + per_batch]
            vecs, sample = encode(inp.take(chunk), torch.as_tensor(chunk))
            parts.append(vecs)
            owners.append(sample)
        return torch.cat(parts), torch.cat(owners)

    return VectorStream(
        description=f"inputs: {inputs_path} ({inp.n} items) through {encoder.description}",
        n_samples=inp.n, batches=input_batches, take=take,
        take_inputs=lambda samples: input_features(inp.take(samples)),
        labels=inp.labels, label_names=inp.label_names, notes=notes,
    )


def _aligned_inputs(data: DataOptions, n_samples: int):  # -> InputSource
    """Raw inputs given with --latents: row i of the inputs is the item of latent sample i."""
    inp = open_inputs(data.inputs, labels=None, image_size=data.image_size, clip_seconds=data.clip_seconds)
    if inp.n != n_samples:
        raise DataError(
            f"--inputs {data.inputs} has {inp.n} items but --latents {data.latents} has {n_samples} samples; "
            "they must be aligned row for row.",
            "Pass the inputs the latents were encoded from, in the same order (one latent sample per input item).")
    return inp


def _input_features(inp) -> Callable[[torch.Tensor], torch.Tensor]:
    """Raw items -> (s, F) features for the input-side comparison (a seeded sketch above SKETCH_DIM)."""
    features = math.prod(inp.sample_shape)
    sketch = random_projection(features) if features > SKETCH_DIM else None

    def f(xb: torch.Tensor) -> torch.Tensor:
        flat = xb.reshape(xb.shape[0], -1).float()
        return flat if sketch is None else flat @ sketch

    return f


def checkpoint_info(ckpt: Checkpoint) -> CheckpointInfo:
    return CheckpointInfo(path=str(ckpt.path), format=ckpt.format, nesting=ckpt.describe_nesting(), fingerprint=ckpt.fingerprint)


def inspect(
    checkpoint: str | Path | Checkpoint,
    *,
    data: DataOptions = DataOptions(),
    analysis: AnalysisOptions = AnalysisOptions(),
    progress: ProgressFn | None = None,
) -> Report:
    """Diagnose every codebook of a checkpoint over the given data."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load(checkpoint, allow_globals=data.allow_globals, nesting=data.nesting)
    found = discover(ckpt, pattern=analysis.codebook, metric=analysis.metric)
    device = pick_device(data.device)
    stream = open_stream(ckpt, data, device=device)
    report = diagnose(checkpoint=checkpoint_info(ckpt), discovery=found, stream=stream, options=analysis,
                      device=device, progress=progress)
    ignored = ignored_data_note(ckpt) if stream is None else None
    return report if ignored is None else replace(report, notes=[*report.notes, ignored])


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
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load(checkpoint, allow_globals=data.allow_globals, nesting=data.nesting)
    found = discover(ckpt, pattern=analysis.codebook, metric=analysis.metric)
    dev = device if device is not None else pick_device(data.device)
    stream = open_stream(ckpt, data, device=dev)
    if stream is None:
        raise DataError(f"Statistics need data, and none was given for {ckpt.path}.",
                        "Pass --latents PATH, or --inputs PATH with an encoder.")
    gathered = gather(discovery=found, stream=stream, options=analysis, device=dev, progress=progress)
    if world > 1:
        gathered = distributed.reduce_gathered(gathered)
        shards, count = tuple(range(world)), world
    elif data.shard is not None:
        shards, count = (data.shard[0],), data.shard[1]
    else:
        shards, count = (0,), 1
    return Statistics(checkpoint=checkpoint_info(ckpt), codebooks=identities(found), options=analysis,
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
    from vqdoctor.stats_report import report_from_stats_alone

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
    return build_report(checkpoint=checkpoint_info(ckpt), discovery=found, gathered=gathered, options=stats.options)


# --------------------------------------------------------------------------------------------
# Repairs (`vqdoctor fix`): gather the vectors, run a fix on every stack, write the output to a
# temporary file, verify that file as it will run (vqdoctor/repair.py), then move it into place.


@dataclass(frozen=True)
class Latents:
    """Every vector of the data at once (k-means needs them together; cap with --max-vectors)."""

    x: torch.Tensor  # (N, D) float32 on the analysis device
    modes: np.ndarray | None  # (N,) int mode id per vector (labels), or None
    mode_names: list[str] | None
    description: str
    mode_source: str | None = None  # None: the user's labels


def collect_latents(ckpt: Checkpoint, data: DataOptions, *, device: torch.device) -> Latents | None:
    """The vectors of ``data`` as one tensor (None when no data was given)."""
    stream = open_stream(ckpt, data, device=device)
    if stream is None:
        return None
    xs, modes = [], []
    for x, sample, _ in stream.batches():
        xs.append(x.to(device=device, dtype=torch.float32))
        if stream.labels is not None:
            modes.append(np.asarray(stream.labels)[sample.cpu().numpy()])
    if not xs:
        raise DataError(f"No vectors in {stream.description}.", "Pass non-empty data.")
    return Latents(torch.cat(xs), np.concatenate(modes) if modes else None, stream.label_names, stream.description)


def _memory_stream(lat: Latents, batch_size: int) -> VectorStream:
    """A stream over vectors held in memory, each vector its own sample."""
    n = lat.x.shape[0]

    def batches() -> Iterator[Batch]:
        for start in range(0, n, batch_size):
            yield lat.x[start : start + batch_size], torch.arange(start, min(n, start + batch_size)), None

    def take(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(idx, dtype=torch.int64)
        return lat.x[rows.to(lat.x.device)], rows

    return VectorStream(description=lat.description, n_samples=n, batches=batches, take=take,
                        labels=lat.modes, label_names=lat.mode_names, mode_source=lat.mode_source)


def report_on_latents(ckpt: Checkpoint, discovery: Discovery, lat: Latents, *, analysis: AnalysisOptions,
                      batch_size: int = 65536) -> Report:
    """The `inspect` report of ``discovery`` over vectors already in memory."""
    return diagnose(checkpoint=checkpoint_info(ckpt), discovery=discovery, stream=_memory_stream(lat, batch_size),
                    options=analysis, device=lat.x.device)


FixFn = Callable[[Mapping[str, torch.Tensor], Stack, "Latents | None"], FixResult]


@dataclass(frozen=True)
class FixOutcome:
    """What a fix did. ``path`` is where the output is (None: not written, because the verified
    after-state was worse and ``force`` was off); ``before``/``after`` are the reports (None
    without data), ``after`` measured on the written file; ``copied`` lists every tensor of the
    output that came from another checkpoint (``--encoder-from``)."""

    path: Path | None
    notes: list[str]
    before: Report | None
    after: Report | None
    copied: tuple[Copied, ...] = ()
    changes: tuple[Change, ...] = ()
    worse: bool = False  # some codebook is worse after the fix (repair.compare)
    target: Path | None = None  # where the output was (or would have been) written
    copied_from: str | None = None  # the --encoder-from checkpoint

    def to_dict(self) -> dict[str, object]:
        """The fix outcome for machines (``vqdoctor fix --json``), schema ``vqdoctor.fix/1``."""
        return {
            "schema": "vqdoctor.fix/1",
            "output": str(self.target) if self.target is not None else None,
            "written": self.path is not None,
            "worse": self.worse,
            "copied": [{"key": c.key, "source_key": c.source_key, "part": c.part, "shape": list(c.shape)}
                       for c in self.copied],
            "copied_from": self.copied_from,
            "codebooks": [c.to_dict() for c in self.changes],
            "notes": list(self.notes),
        }


def _matching(found: Discovery, before: Discovery) -> Discovery:
    """The stacks of the repaired checkpoint that hold the codebooks we repaired."""
    names = {cb.name for cb in before.codebooks}
    picked = tuple(s for s in found.stacks if any(cb.name in names for cb in s.codebooks))
    return Discovery(stacks=picked) if picked else found


def _with_modes(lat: Latents, modes: tuple[np.ndarray, list[str], str] | None) -> Latents:
    if modes is None or lat.modes is not None:
        return lat
    return replace(lat, modes=modes[0], mode_names=modes[1], mode_source=modes[2])


def _temp_output(target: Path) -> Path:
    """A fresh path next to ``target`` with its suffix (the writers keep the format by suffix)."""
    for i in range(1000):
        cand = target.with_name(f"{TMP_PREFIX}{target.stem[:80]}-unverified-{os.getpid()}-{i}{target.suffix}")
        if not cand.exists():
            return cand
    raise UsageError(f"Cannot find a free temporary name next to {target}.", f"Remove them with: vqdoctor clean {target.parent}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def fix_checkpoint(
    checkpoint: str | Path,
    *,
    fix: FixFn,
    out: Path | None,
    in_place: bool = False,
    data: DataOptions = DataOptions(),
    analysis: AnalysisOptions = AnalysisOptions(projection="none"),
    encoder_from: Path | None = None,
    encoder_prefixes: tuple[str, ...] = ("encoder",),
    with_decoder: bool = False,
    decoder_prefixes: tuple[str, ...] = ("decoder",),
    need_data: bool = True,
    across_ranks: bool = False,
    force: bool = False,
) -> FixOutcome:
    """Repair ``checkpoint`` into ``out`` (same format; the input is untouched unless ``in_place``,
    which keeps a backup) and verify the output as it will run.

    ``encoder_from``: a pretrained checkpoint (e.g. the autoencoder trained without VQ) whose
    ``encoder_prefixes`` modules (and ``decoder_prefixes`` with ``with_decoder``) are copied into
    the output, matched by key (vqdoctor/io/transplant.py); the fix sees the vectors of that
    encoder. The output is written to a temporary file, re-loaded, re-encoded with the encoder in
    it (or the user's latents) and re-assigned with each quantizer's own rule; that is the
    after-state. When it is worse than the before-state (vqdoctor/repair.py), the temporary file
    is removed and ``path`` is None, unless ``force``.

    Under torchrun (``across_ranks``: the fix reduces its statistics over the ranks, as
    ``fix kmeans`` does), every rank encodes its slice of the data, the fix runs on every rank
    together, and rank 0 writes the file and measures before/after on its own slice; other ranks
    return ``before=after=None``."""
    if out is None and not in_place:
        raise UsageError("Say where to write the repaired checkpoint: --out NEW (or --in-place, which keeps a backup).")
    if encoder_from is not None and data.latents is not None:
        raise UsageError("--encoder-from encodes raw data: pass --inputs (not --latents).")
    if with_decoder and encoder_from is None:
        raise UsageError("--with-decoder copies the decoder of --encoder-from PRETRAINED; pass that too.")
    target = Path(checkpoint) if out is None else out
    # the output is never one of the inputs (checkpoint, data, labels, encoders), nor inside one
    refuse_overlap(target, [p for p in (Path(checkpoint), data.latents, data.inputs, data.labels, data.encoder,
                                        encoder_from) if p is not None], allow_same=Path(checkpoint) if in_place else None)
    if in_place and out is not None and not (out.exists() and os.path.samefile(out, checkpoint)):
        raise UsageError(f"--in-place writes over the input {checkpoint}, but the output given is {out}.",
                         "Drop --in-place to write a new file, or give the input path as the output.")
    with distributed.session(pick_device(data.device)) as job:
        if job is not None and not across_ranks:
            raise UsageError("This fix does not run under torchrun (only `fix kmeans` reduces over ranks).",
                             "Run it as one process.")
        if job is not None:
            data = replace(data, shard=job[0].shard)
        device = pick_device(data.device) if job is None else job[1]
        ckpt = load(checkpoint, allow_globals=data.allow_globals, nesting=data.nesting)
        found = discover(ckpt, pattern=analysis.codebook, metric=analysis.metric)
        if data.latents is None and data.inputs is None and data_from_metadata(ckpt) is not None:
            # the checkpoint's own data, resolved once: the output (written elsewhere) is measured on it too
            data = replace(data, inputs=data_from_metadata(ckpt))
        source = None
        transplant: Transplant | None = None
        if encoder_from is not None:
            source = load(encoder_from, allow_globals=data.allow_globals)
            parts = encoder_prefixes + (decoder_prefixes if with_decoder else ())
            transplant = plan_transplant(ckpt, source, parts=parts)
        runnable = with_arch(ckpt, source)  # the model as it is (an encoder description lent by the source)
        lat_before = collect_latents(runnable, data, device=device)
        modes = None
        if lat_before is not None and lat_before.modes is None and distributed.is_main():
            modes = infer_modes_once(lat_before.x, subsample=analysis.subsample, seed=analysis.seed)
        lat_before = _with_modes(lat_before, modes) if lat_before is not None else None
        staged_ckpt = staged(ckpt, transplant.tensors, arch_from=source) if transplant is not None else runnable
        lat = _with_modes(collect_latents(staged_ckpt, data, device=device), modes) if transplant is not None else lat_before
        if lat is None and need_data:
            raise DataError(
                "This fix needs data: the vectors that reach the quantizer.",
                "Pass --latents FILE, or --inputs with --model/--encoder (or --encoder-from PRETRAINED).",
            )
        result = FixResult()
        for stack in found.stacks:  # later stacks see the earlier stacks' updates
            result.merge(fix(ChainMap(result.updates, staged_ckpt.state), stack, lat))
        if not result.updates and not result.remove and transplant is None:
            raise UsageError("Nothing to change: " + (" ".join(result.notes) or "no codebook needed this fix."))
        if not distributed.is_main():
            return FixOutcome(path=target, notes=list(result.notes), before=None, after=None, target=target)
        notes = (transplant.notes() if transplant is not None else []) + list(result.notes)
        if job is not None and lat is not None:
            notes.append(f"k-means ran over all {job[0].world_size} ranks; before/after are measured on "
                         f"rank 0's slice ({lat.x.shape[0]:,} vectors).")
        if modes is not None:
            notes.append(f"Data modes {modes[2]} ({len(modes[1])} modes), used for both tables.")
        updates = {**(transplant.tensors if transplant is not None else {}), **result.updates}
        measure = replace(analysis, codebook=None)
        before = report_on_latents(runnable, found, lat_before, analysis=measure) if lat_before is not None else None
        tmp = _temp_output(target)
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
                    return FixOutcome(path=None, notes=notes, before=before, after=after,
                                      copied=transplant.copied if transplant else (),
                                      copied_from=transplant.source if transplant else None,
                                      changes=tuple(changes), worse=True, target=target)
                if worse:
                    notes.append("The verified after-state is worse than the before-state; written anyway (--force).")
                written = _commit(ckpt, tmp, target, updates=updates, remove=result.remove, in_place=in_place)
            finally:
                _remove(tmp)
        return FixOutcome(path=written, notes=notes, before=before, after=after,
                          copied=transplant.copied if transplant else (),
                          copied_from=transplant.source if transplant else None,
                          changes=tuple(changes), worse=worse, target=target)


def _commit(ckpt: Checkpoint, tmp: Path, target: Path, *, updates: Mapping[str, torch.Tensor],
            remove: set[str], in_place: bool) -> Path:
    """Put the verified output in place: a rename where nothing is in the way, else the writer
    again (same updates, same bytes; it keeps the backup of --in-place and replaces atomically)."""
    if not in_place and (not target.exists() or (tmp.is_file() and target.is_file())):
        os.replace(tmp, target)  # atomic, over an existing file too
        return target
    _remove(tmp)  # not left beside the output while the writer runs (it reports leftovers there)
    return write_checkpoint(ckpt, target, updates=updates, remove=remove, in_place=in_place)
