"""The vector pipeline: the data options turned into a :class:`VectorStream` of the vectors that
reach the quantizer.

Two routes, each a small class over the sources of ``vqdoctor.io.data``:

- :class:`LatentBatches` -- latents read from a file (or held in memory), optionally paired row
  for row with the raw inputs they were encoded from (``--latents`` with ``--inputs``);
- :class:`EncodedBatches` -- raw inputs encoded batch by batch by the user's encoder
  (``--inputs`` with ``--model`` / ``--encoder`` / the checkpoint's own encoder).

Reading runs one batch ahead in a thread (:func:`vqdoctor.io.prefetch.prefetch`); inputs wider
than ``SKETCH_DIM`` features are compared through a seeded random projection
(:class:`InputFeatures`). :func:`collect_latents` gathers a whole stream into memory (``fix``:
k-means needs every vector at once) and :func:`memory_stream` streams such vectors again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from vqdoctor.core.finite import require_finite
from vqdoctor.core.modes import ModeModel
from vqdoctor.core.sketch import SKETCH_DIM, random_projection
from vqdoctor.errors import DataError, EncoderError, VqdoctorError
from vqdoctor.io.checkpoint_types import Checkpoint
from vqdoctor.io.data import InputSource, LatentSource, open_inputs, open_latents
from vqdoctor.io.encoders import (
    Encoder,
    data_from_metadata,
    encoder_from_factory,
    encoder_from_file,
    encoder_from_metadata,
)
from vqdoctor.io.prefetch import prefetch
from vqdoctor.options import DataOptions

# A batch: latents (b, D) float32 on the analysis device, the sample each vector came from (b,),
# and the raw inputs of those samples flattened to (b_samples, F) when the stream has them
# (indexed by the local sample order of ``sample_idx``; None for latents-only streams).
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True)
class VectorStream:
    """The vectors that reach the quantizer, however they were obtained."""

    description: str
    n_samples: int
    batches: Callable[[], Iterator[Batch]]
    take: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]  # samples -> (latents (m,D), sample (m,))
    take_inputs: Callable[[np.ndarray], torch.Tensor] | None = None  # samples -> inputs (s, F)
    labels: np.ndarray | None = None  # (n_samples,) int
    label_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    mode_source: str | None = None  # where ``labels`` came from when not the user's (fix: inferred once)
    # inferred mode models by basis ("inputs" / "latents"), shared by runs over the same data
    # (vqdoctor trend: the same subsample for every checkpoint, so the same fit)
    mode_cache: dict[str, ModeModel] | None = None
    encodes: bool = False  # batches run an encoder (the progress stage says "encode + assign")


# ------------------------------------------------------------------------------ helpers


def flatten_vectors(z: torch.Tensor, channel_axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder output (b, ..., d, ...) -> vectors (b*P, d) and the local sample of each (b*P,)."""
    b = z.shape[0]
    if z.ndim == 2:
        return z, torch.arange(b, device=z.device)
    z = z.movedim(channel_axis, -1)
    positions = math.prod(z.shape[1:-1])
    return z.reshape(-1, z.shape[-1]), torch.arange(b, device=z.device).repeat_interleave(positions)


class InputFeatures:
    """Raw items -> (s, F) features for the input-side comparison (a seeded sketch above SKETCH_DIM)."""

    def __init__(self, sample_shape: tuple[int, ...]) -> None:
        self.features = math.prod(sample_shape)
        self.sketch = random_projection(self.features) if self.features > SKETCH_DIM else None

    def note(self) -> str | None:
        if self.sketch is None:
            return None
        return (f"Inputs have {self.features:,} features: modes and k-NN purity in input space use a seeded "
                f"{SKETCH_DIM}-d random projection of them (distances kept, Johnson-Lindenstrauss).")

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        flat = xb.reshape(xb.shape[0], -1).float()
        return flat if self.sketch is None else flat @ self.sketch


def encoder_for(ckpt: Checkpoint, data: DataOptions, device: torch.device) -> Encoder | None:
    """The encoder the options name (--model, --encoder), else the checkpoint's own (or None)."""
    if data.model is not None:
        return encoder_from_factory(data.model, ckpt, method=data.encode_method, device=device,
                                    kwargs=dict(data.model_args))
    if data.encoder is not None:
        return encoder_from_file(data.encoder, device=device)
    described = encoder_from_metadata(ckpt, device=device)
    if described is not None or data.inputs is None:
        return described
    from vqdoctor.adapters import encoder_for as adapter_encoder  # Hugging Face folders (docs/hf.md)

    return adapter_encoder(ckpt, inputs=data.inputs, pixel_range=data.pixel_range, device=device)


# ------------------------------------------------------------------------------ latents


def aligned_inputs(data: DataOptions, n_samples: int) -> InputSource:
    """Raw inputs given with --latents: row i of the inputs is the item of latent sample i."""
    assert data.inputs is not None
    inp = open_inputs(data.inputs, labels=None, image_size=data.image_size, clip_seconds=data.clip_seconds,
                      sample_rate=data.sample_rate)
    if inp.n != n_samples:
        raise DataError(
            f"--inputs {data.inputs} has {inp.n} items but --latents {data.latents} has {n_samples} samples; "
            "they must be aligned row for row.",
            "Pass the inputs the latents were encoded from, in the same order (one latent sample per input item).")
    return inp


class LatentBatches:
    """Latents (a file or memory), with the raw inputs of their samples when given row for row."""

    def __init__(self, src: LatentSource, data: DataOptions, raw: InputSource | None) -> None:
        self.src, self.data, self.raw = src, data, raw
        self.features = None if raw is None else InputFeatures(raw.sample_shape)

    def batches(self) -> Iterator[Batch]:
        d = self.data
        for x, sample in prefetch(self.src.batches(d.batch_size, shard=d.shard, max_vectors=d.max_vectors)):
            if self.raw is None or self.features is None:
                yield x, sample, None
            else:  # the batch's items' inputs, one row per distinct item in increasing order
                yield x, sample, self.features(self.raw.take(torch.unique(sample).numpy()))

    def take_inputs(self, samples: np.ndarray) -> torch.Tensor:
        assert self.raw is not None and self.features is not None
        return self.features(self.raw.take(samples))

    def stream(self) -> VectorStream:
        src, raw = self.src, self.raw
        labels, names = src.labels, src.label_names
        if labels is None and raw is not None:
            labels, names = raw.labels, raw.label_names
        paired = "" if raw is None else f", with inputs {self.data.inputs} ({raw.n} items, row for row)"
        return VectorStream(
            description=f"latents: {src.path} ({src.n_vectors} vectors of dim {src.dim}){paired}",
            n_samples=src.n_samples, batches=self.batches, take=src.take, labels=labels, label_names=names,
            take_inputs=None if raw is None else self.take_inputs,
        )


def latent_stream(data: DataOptions, src: LatentSource | None = None) -> VectorStream:
    """The stream of ``--latents`` (or of ``src``, already opened), paired with ``--inputs`` if given."""
    if src is None:
        assert data.latents is not None
        src = open_latents(data.latents, channel_axis=data.channel_axis, labels=data.labels)
    raw = aligned_inputs(data, src.n_samples) if data.inputs is not None else None
    return LatentBatches(src, data, raw).stream()


# ------------------------------------------------------------------------------ encoded inputs


class EncodedBatches:
    """Raw inputs through an encoder, batch by batch, on the analysis device."""

    def __init__(self, inp: InputSource, encoder: Encoder, data: DataOptions, *, device: torch.device,
                 path: object) -> None:
        self.inp, self.encoder, self.data, self.device, self.path = inp, encoder, data, device, path
        self.channel_axis = data.channel_axis if data.channel_axis is not None else encoder.channel_axis
        self.per_batch = data.batch_size if len(inp.sample_shape) <= 1 else max(1, min(64, data.batch_size))
        self.features = InputFeatures(inp.sample_shape)

    def encode(self, xb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors (m, D), the sample of each (m,)) of one batch of items with sample ids ``idx``."""
        enc = self.encoder
        try:
            with torch.inference_mode():
                z = enc.fn(xb.to(self.device))
        except VqdoctorError:  # vqdoctor's own check of the inputs (the Hugging Face adapters): as it is
            raise
        except Exception as err:  # the user's model code: report it as theirs, with the batch shape
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise EncoderError(
                f"The encoder ({enc.description}) failed on a batch of shape {tuple(xb.shape)} "
                f"from {self.path}: {first}",
                "Check that it takes this input shape (an exported program needs a dynamic batch "
                "dimension: torch.export.Dim), or pass --batch-size; VQDOCTOR_DEBUG=1 shows the traceback.",
            ) from err
        if not isinstance(z, torch.Tensor):
            raise EncoderError(f"The encoder ({enc.description}) returned {type(z).__name__}, not a tensor.",
                               "Pass --encode-method to pick the method or submodule that returns the latents.")
        z = z.float()
        require_finite(z, f"The encoder's output on {self.path}")
        vecs, local = flatten_vectors(z, self.channel_axis)
        return vecs, idx.to(vecs.device)[local]

    def batches(self) -> Iterator[Batch]:
        # decode the next batch (images, audio) while this one is encoded and assigned
        d = self.data
        for xb, idx in prefetch(self.inp.batches(self.per_batch, shard=d.shard, max_items=d.max_vectors)):
            vecs, sample = self.encode(xb, idx)
            yield vecs, sample, self.features(xb)

    def take(self, samples: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        parts, owners = [], []
        for start in range(0, len(samples), self.per_batch):
            chunk = samples[start : start + self.per_batch]
            vecs, sample = self.encode(self.inp.take(chunk), torch.as_tensor(chunk))
            parts.append(vecs)
            owners.append(sample)
        return torch.cat(parts), torch.cat(owners)

    def take_inputs(self, samples: np.ndarray) -> torch.Tensor:
        return self.features(self.inp.take(samples))

    def stream(self, notes: list[str]) -> VectorStream:
        inp = self.inp
        sketch = self.features.note()
        return VectorStream(
            description=f"inputs: {self.path} ({inp.n} items) through {self.encoder.description}", encodes=True,
            n_samples=inp.n, batches=self.batches, take=self.take, take_inputs=self.take_inputs,
            labels=inp.labels, label_names=inp.label_names,
            notes=[*notes, *self.encoder.notes, *([sketch] if sketch else [])],
        )


def input_stream(ckpt: Checkpoint, data: DataOptions, *, device: torch.device, inputs: InputSource | None = None,
                 encoder: Encoder | None = None) -> VectorStream | None:
    """The stream of raw inputs (``--inputs``, ``inputs`` already opened, or the checkpoint's own
    training data named in its metadata) through the encoder; None when there are no inputs."""
    inputs_path = data.inputs if inputs is None else inputs.path
    notes: list[str] = []
    if inputs_path is None:
        inputs_path = data_from_metadata(ckpt)
        if inputs_path is None:
            return None
        notes.append(f"Data: the checkpoint's own training data {inputs_path} (named in its metadata).")
    encoder = encoder if encoder is not None else encoder_for(ckpt, data, device)
    if encoder is None:
        raise DataError(
            f"--inputs {inputs_path} needs an encoder, and {ckpt.path} does not describe its own.",
            "Pass --model pkg.module:factory (your model code) or --encoder FILE (TorchScript / torch.export), or give --latents instead.",
        )
    inp = inputs if inputs is not None else open_inputs(inputs_path, labels=data.labels, image_size=data.image_size,
                                                        clip_seconds=data.clip_seconds, sample_rate=data.sample_rate)
    return EncodedBatches(inp, encoder, data, device=device, path=inputs_path).stream(notes)


def open_stream(ckpt: Checkpoint, data: DataOptions, *, device: torch.device,
                latents: LatentSource | None = None, inputs: InputSource | None = None,
                encoder: Encoder | None = None) -> VectorStream | None:
    """Turn the data options into a stream of latents (None: nothing to read, data-free).
    ``latents`` / ``inputs`` / ``encoder``: sources already opened (objects in memory,
    ``vqdoctor.memory``), used instead of the files and encoder the options name."""
    if latents is not None or data.latents is not None:
        return latent_stream(data, latents)
    return input_stream(ckpt, data, device=device, inputs=inputs, encoder=encoder)


# ------------------------------------------------------------------------------ in memory


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


class _InMemory:
    """Batches of vectors held in memory, each vector its own sample."""

    def __init__(self, x: torch.Tensor, batch_size: int) -> None:
        self.x, self.batch_size = x, batch_size

    def batches(self) -> Iterator[Batch]:
        n = self.x.shape[0]
        for start in range(0, n, self.batch_size):
            yield self.x[start : start + self.batch_size], torch.arange(start, min(n, start + self.batch_size)), None

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(idx, dtype=torch.int64)
        return self.x[rows.to(self.x.device)], rows


def memory_stream(lat: Latents, batch_size: int = 65536) -> VectorStream:
    """A stream over vectors held in memory, each vector its own sample."""
    held = _InMemory(lat.x, batch_size)
    return VectorStream(description=lat.description, n_samples=lat.x.shape[0], batches=held.batches, take=held.take,
                        labels=lat.modes, label_names=lat.mode_names, mode_source=lat.mode_source)
