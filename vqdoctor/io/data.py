"""Data sources that stream in bounded memory: latents (what reaches the quantizer) and raw inputs.

Latents (:func:`open_latents`, CLI ``--latents``)
-------------------------------------------------
- ``.npy``: memory-mapped (``np.load(mmap_mode="r")``), read a batch at a time.
- ``.npz``: the single array, or the one named ``key`` / ``latents`` / ``z`` / ``x``; labels under
  ``y`` or ``labels`` (ints or strings). Uncompressed members are memory-mapped; compressed members
  are streamed from the zip a batch at a time (never inflated whole; see ``vqdoctor/io/npz.py``).
  Every array header is checked against the bytes the file (or zip entry) holds before use.
- ``.safetensors``: the single tensor, or ``key`` / ``latents``; read a slice at a time. Labels
  under ``y`` / ``labels``.
- ``.pt``/``.pth``: ``torch.load(weights_only=True)``, memory-mapped: a tensor, or a dict with
  ``key`` / ``latents`` (labels under ``y`` / ``labels``).
Shapes: ``(N, d)`` is N vectors. Anything with more axes needs ``channel_axis``: ``(B, d, H, W)`` or
``(B, d, T)`` take ``channel_axis=1``; ``(B, T, d)`` or ``(B, H, W, d)`` take ``channel_axis=-1``;
every position of a sample is one vector (labels are per sample). bf16/fp16 are read as float32.

Raw inputs (:func:`open_inputs`, CLI ``--inputs``)
--------------------------------------------------
- ``.npy``/``.npz`` arrays ``(N, ...)`` (npz: the single array or ``key`` / ``x`` / ``inputs`` /
  ``images`` / ``data``; labels under ``y`` / ``labels``), ``.safetensors`` and ``.pt`` tensors
  (same keys). Values are passed on as float32, unscaled.
- An image folder: one sub-folder per class (class = the first-level sub-folder's name, sorted;
  its images are found recursively, at any depth, sorted by path), or images directly in the
  folder (no labels). Names starting with ``.`` are skipped; links to folders are not followed. ``.png .jpg .jpeg .bmp .gif .webp .tif .tiff``, decoded with Pillow,
  scaled to ``[0, 1]``, CHW. Grayscale when the first image is grayscale, else RGB. With
  ``image_size`` every image is resized to ``image_size x image_size``; without, all must share the
  first image's size.
- An audio folder (what audio codecs are fed): ``.wav .flac .ogg`` clips, class sub-folders as
  for images (nested too) or directly in the folder, mixed to mono (mean of the channels), as ``(1, T)`` float32 in
  ``[-1, 1]``. Decoded by ``soundfile`` when installed (the ``audio`` extra: every PCM width, float
  WAV, FLAC, OGG), else WAV PCM 8/16/24/32-bit by the standard library (FLAC/OGG then name the
  extra). With ``sample_rate`` every clip is resampled to it (polyphase filter,
  :func:`vqdoctor.io.media.resample`); without, all clips must share one rate (an error names the
  rates). With ``clip_seconds`` every clip is cut or zero-padded to that length (at the target
  rate), without it all must share the first clip's length.
- A manifest (``.csv`` with a ``path`` and optional ``label`` column, or ``.jsonl`` objects with
  ``path`` and optional ``label``) listing image files or audio clips, read as above; paths are
  relative to the manifest's folder and may not leave it (see ``vqdoctor/io/manifest.py``).
Labels (``labels=`` / CLI ``--labels``): ``.npy`` of ints or strings (strings are mapped to ids in
sorted order, names kept), or UTF-8 ``.txt`` with one label per line; their count must match the
data. Integer labels that are not ``0..M-1`` are remapped with ``np.unique`` (names keep the values),
so no label value ever sizes an array. Images are capped at
:data:`vqdoctor.io.media.MAX_IMAGE_PIXELS`; WAV headers are checked against the file size.

Both sources yield ``(batch, index)`` pairs where ``index`` is the sample index of each row, so
``labels[index]`` gives each vector's mode; ``shard=(i, n)`` takes the i-th of n contiguous slices
of the samples. NaN/Inf raise :class:`~vqdoctor.errors.DataError` naming the file and first bad row.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqdoctor.core.finite import require_finite
from vqdoctor.errors import DataError, InputFileError, UsageError
from vqdoctor.io.headers import open_npy
from vqdoctor.io.manifest import MANIFEST_SUFFIXES, label_values, read_manifest
from vqdoctor.io.media import AUDIO_SUFFIXES, audio_info, decode_image, read_audio, resample, resampled_length
from vqdoctor.io.npz import (
    NPZ_ERRORS,
    CompressedMember,
    npz_keys,
    npz_member,
    read_npz_array,
)
from vqdoctor.io.safe_pickle import safe_torch_load

LATENT_SUFFIXES = (".npy", ".npz", ".safetensors", ".pt", ".pth")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
LABEL_KEYS = ("y", "labels")
LATENT_KEYS = ("latents", "z", "x")
INPUT_KEYS = ("x", "inputs", "images", "data")
_INT_LABEL = re.compile(r"-?[0-9]+")  # ASCII digits only (str.isdigit takes '¹' too)
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P;L")


# --------------------------------------------------------------------------------------------
# array readers: rows [start, stop) or a set of rows, as float32 tensors


class _Rows:
    shape: tuple[int, ...]

    def read(self, start: int, stop: int) -> torch.Tensor:
        raise NotImplementedError

    def gather(self, rows: np.ndarray) -> torch.Tensor:  # rows sorted, unique
        return torch.cat([self.read(int(r), int(r) + 1) for r in rows]) if len(rows) else self.read(0, 0)


class _NumpyRows(_Rows):
    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape = array, tuple(array.shape)

    def read(self, start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[start:stop], dtype=np.float32))

    def gather(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[rows], dtype=np.float32))


class _CompressedRows(_Rows):
    """A compressed .npz member streamed from the zip (never inflated whole)."""

    def __init__(self, member: CompressedMember) -> None:
        self.member, self.shape = member, member.shape

    def read(self, start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(self.member.read(start, stop).astype(np.float32))

    def gather(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.member.gather(rows).astype(np.float32))


class _TorchRows(_Rows):
    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor, self.shape = tensor, tuple(tensor.shape)

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self.tensor[start:stop].to(torch.float32)

    def gather(self, rows: np.ndarray) -> torch.Tensor:
        return self.tensor[torch.from_numpy(rows.astype(np.int64))].to(torch.float32)


class _SafetensorsRows(_Rows):
    def __init__(self, path: Path, key: str, shape: tuple[int, ...]) -> None:
        from safetensors import safe_open

        self.path, self.key = path, key
        self.handle = self._guard(lambda: safe_open(str(path), framework="pt", device="cpu"))
        self.slice = self._guard(lambda: self.handle.get_slice(key))
        self.shape = shape

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self._guard(lambda: self.slice[start:stop]).to(torch.float32)

    def _guard(self, step: Any, key: str | None = None) -> Any:
        """Run ``step``; the header was validated, so an error here means the file changed or is damaged."""
        from safetensors import SafetensorError

        try:
            return step()
        except (SafetensorError, OSError) as exc:
            raise InputFileError(f"{self.path}: tensor {key or self.key!r} could not be read: {exc}.",
                                 hint="Copy the file again; was it modified while vqdoctor read it?") from None


class _ImageRows(_Rows):
    def __init__(self, files: list[Path], *, gray: bool, size: tuple[int, int], resize: bool) -> None:
        self.files, self.gray, self.size, self.resize = files, gray, size, resize
        channels = 1 if gray else 3
        self.shape = (len(files), channels, size[1], size[0])

    def read(self, start: int, stop: int) -> torch.Tensor:
        return torch.stack([self._load(f) for f in self.files[start:stop]]) if stop > start else (
            torch.empty((0, *self.shape[1:])))

    def _load(self, file: Path) -> torch.Tensor:
        img = decode_image(file, mode="L" if self.gray else "RGB", size=self.size if self.resize else None)
        if not self.resize and img.size != self.size:
            raise DataError(
                f"Image {file} is {img.size[0]}x{img.size[1]} but the first image is "
                f"{self.size[0]}x{self.size[1]}; images must share one size.",
                hint="Pass --image-size N to resize every image to N x N.",
            )
        array = np.asarray(img, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array)
        return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


class _AudioRows(_Rows):
    """Audio clips as (1, clip) float32 in [-1, 1]: channels mixed to mono (mean), each clip
    resampled from its own rate (``rates``, one per file) to ``rate``, then cut to (or zero-padded
    to) ``clip`` samples."""

    def __init__(self, files: list[Path], *, clip: int, rate: int, rates: list[int]) -> None:
        self.files, self.clip, self.rate, self.rates = files, clip, rate, rates
        self.shape = (len(files), 1, clip)

    def read(self, start: int, stop: int) -> torch.Tensor:
        return torch.stack([self._load(f, r) for f, r in zip(self.files[start:stop], self.rates[start:stop])]) if (
            stop > start) else torch.empty((0, *self.shape[1:]))

    def _load(self, file: Path, src_rate: int) -> torch.Tensor:
        # a resampled clip reads a few source frames past the cut so the filter's tail is real data
        limit = self.clip if src_rate == self.rate else math.ceil(self.clip * src_rate / self.rate) + _RESAMPLE_MARGIN
        frames, rate, _ = read_audio(file, limit=limit)
        if rate != src_rate:
            raise DataError(f"{file} is now sampled at {rate} Hz but was {src_rate} Hz when the folder was opened.",
                            hint="Was it modified while vqdoctor read it?")
        mono = resample(frames.mean(1), rate, self.rate)[: self.clip]
        out = torch.zeros(1, self.clip)
        out[0, : mono.shape[0]] = torch.from_numpy(np.ascontiguousarray(mono))
        return out


_RESAMPLE_MARGIN = 64


# --------------------------------------------------------------------------------------------
# sources


def _check_batching(batch_size: int, shard: tuple[int, int] | None, limit: int | None, limit_name: str) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}.",
                         hint="Pass --batch-size N with N >= 1.")
    if shard is not None:
        i, n = shard
        if n < 1 or not 0 <= i < n:
            raise UsageError(f"shard {shard!r} is not (i, n) with 0 <= i < n.",
                             hint="Pass --shard i/n, e.g. 0/4 for the first of four.")
    if limit is not None and limit < 1:
        raise UsageError(f"{limit_name} must be at least 1, got {limit}.")


def _shard_range(n: int, shard: tuple[int, int] | None) -> tuple[int, int]:
    if shard is None:
        return 0, n
    i, k = shard
    return i * n // k, (i + 1) * n // k


def _check_indices(indices: np.ndarray | Sequence[int], n: int, what: str) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise UsageError(f"{what} indices must be a 1-D integer array, got shape {idx.shape} dtype {idx.dtype}.")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = int(idx[(idx < 0) | (idx >= n)][0])
        raise UsageError(f"{what} index {bad} is out of range: there are {n} {what}s.")
    return idx


def _ordered_gather(rows: _Rows, idx: np.ndarray) -> torch.Tensor:
    unique, inverse = np.unique(idx, return_inverse=True)
    return rows.gather(unique)[torch.from_numpy(inverse.reshape(-1).astype(np.int64))]


class LatentSource:
    """Vectors that reach the quantizer, streamed from a file. ``n_samples`` samples, each of
    ``positions`` vectors of dimension ``dim`` (``n_vectors = n_samples * positions``)."""

    def __init__(
        self,
        path: Path,
        rows: _Rows,
        *,
        channel_axis: int | None,
        labels: np.ndarray | None,
        label_names: list[str] | None,
    ) -> None:
        self.path = path
        self._rows = rows
        self.shape = rows.shape
        self._axis = channel_axis  # normalised, >= 1, or None for (N, d)
        self.n_samples = int(rows.shape[0])
        self.dim = int(rows.shape[channel_axis if channel_axis is not None else 1])
        rest = [s for a, s in enumerate(rows.shape[1:], start=1) if a != (channel_axis or 1)]
        self.positions = int(math.prod(rest))
        self.n_vectors = self.n_samples * self.positions
        self.labels = labels
        self.label_names = label_names

    def _vectors(self, block: torch.Tensor) -> torch.Tensor:  # (b, ...) -> (b * positions, d)
        if self._axis is not None:
            block = block.movedim(self._axis, -1)
        return block.reshape(-1, self.dim)

    def batches(
        self, batch_size: int, *, shard: tuple[int, int] | None = None, max_vectors: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(vectors (b, d) float32, sample index (b,) int64)`` with ``b <= batch_size``,
        in file order, over this shard's samples, stopping after ``max_vectors`` vectors."""
        _check_batching(batch_size, shard, max_vectors, "max_vectors")
        start, stop = _shard_range(self.n_samples, shard)
        per_read = max(1, batch_size // self.positions)
        left = self.n_vectors if max_vectors is None else max_vectors
        for s0 in range(start, stop, per_read):
            s1 = min(stop, s0 + per_read)
            vectors = self._vectors(self._rows.read(s0, s1))
            samples = torch.arange(s0, s1, dtype=torch.int64).repeat_interleave(self.positions)
            require_finite(vectors, str(self.path), row="vector", first_row=s0 * self.positions)
            for b0 in range(0, vectors.shape[0], batch_size):
                if left <= 0:
                    return
                b1 = min(vectors.shape[0], b0 + batch_size, b0 + left)
                left -= b1 - b0
                yield vectors[b0:b1].contiguous(), samples[b0:b1]

    def take(self, sample_indices: np.ndarray | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every vector of the given samples (in the given order): ``(vectors (m, d) float32,
        sample index (m,) int64)`` with ``m = len(sample_indices) * positions``."""
        idx = _check_indices(sample_indices, self.n_samples, "sample")
        vectors = self._vectors(_ordered_gather(self._rows, idx))
        samples = torch.from_numpy(idx).repeat_interleave(self.positions)
        require_finite(vectors, str(self.path), row="selected vector")
        return vectors, samples


class InputSource:
    """Raw inputs for an encoder: ``n`` items of shape ``sample_shape``, streamed as float32."""

    def __init__(self, path: Path, rows: _Rows, *, labels: np.ndarray | None,
                 label_names: list[str] | None) -> None:
        self.path = path
        self._rows = rows
        self.n = int(rows.shape[0])
        self.sample_shape = tuple(int(s) for s in rows.shape[1:])
        self.labels = labels
        self.label_names = label_names

    def batches(
        self, batch_size: int, *, shard: tuple[int, int] | None = None, max_items: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(inputs (b, *sample_shape) float32, index (b,) int64)``, ``b <= batch_size``."""
        _check_batching(batch_size, shard, max_items, "max_items")
        start, stop = _shard_range(self.n, shard)
        if max_items is not None:
            stop = min(stop, start + max_items)
        for i0 in range(start, stop, batch_size):
            i1 = min(stop, i0 + batch_size)
            x = self._rows.read(i0, i1)
            require_finite(x, str(self.path), row="item", first_row=i0)
            yield x, torch.arange(i0, i1, dtype=torch.int64)

    def take(self, indices: np.ndarray | Sequence[int]) -> torch.Tensor:
        """The given items, in the given order: ``(m, *sample_shape)`` float32."""
        idx = _check_indices(indices, self.n, "item")
        x = _ordered_gather(self._rows, idx)
        require_finite(x, str(self.path), row="selected item")
        return x


# --------------------------------------------------------------------------------------------
# opening files


def open_latents(
    path: str | Path,
    *,
    channel_axis: int | None = None,
    key: str | None = None,
    labels: str | Path | None = None,
) -> LatentSource:
    """Open a latents file (see the module docstring) without reading it whole.

    ``channel_axis`` is required for arrays with more than two axes; ``labels`` is an optional
    file with one mode id per sample (overrides labels stored in the file)."""
    path = Path(path)
    _check_file(path, LATENT_SUFFIXES, "latents")
    rows, file_labels = _open_rows(path, key=key, preferred=LATENT_KEYS, what="latents")
    shape = rows.shape
    if len(shape) < 2:
        raise DataError(f"Latents in {path} have shape {shape}; expected (N, d), (B, d, H, W) or (B, T, d).",
                        hint="Save the latents as an (N, d) array.")
    axis: int | None
    if len(shape) == 2:
        if channel_axis not in (None, 1, -1):
            raise UsageError(f"--channel-axis {channel_axis} does not fit latents of shape {shape}; "
                             "for (N, d) the channels are axis 1 (or leave it out).")
        axis = None
    else:
        if channel_axis is None:
            raise UsageError(
                f"Latents in {path} have shape {shape}; with more than two axes vqdoctor needs to "
                "know which axis holds the channels.",
                hint="Pass --channel-axis 1 for (B, d, H, W) / (B, d, T), or --channel-axis -1 for "
                "(B, T, d) / (B, H, W, d).",
            )
        axis = channel_axis + len(shape) if channel_axis < 0 else channel_axis
        if not 1 <= axis < len(shape):
            raise UsageError(f"--channel-axis {channel_axis} does not fit latents of shape {shape}: "
                             f"use an axis from 1 to {len(shape) - 1} (or -1); axis 0 is the batch.")
    if math.prod(shape) == 0:
        raise DataError(f"Latents in {path} are empty (shape {shape}).", hint="Point at a file with data.")
    label_values, names = _labels(path, labels, file_labels, shape[0], "latent samples")
    return LatentSource(path, rows, channel_axis=axis, labels=label_values, label_names=names)


def open_inputs(
    path: str | Path,
    *,
    labels: str | Path | None = None,
    image_size: int | None = None,
    clip_seconds: float | None = None,
    key: str | None = None,
    sample_rate: int | None = None,
) -> InputSource:
    """Open raw inputs: an array file, an image folder or an audio folder (see the module docstring)."""
    path = Path(path)
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise UsageError(f"image_size must be a positive integer, got {image_size!r}.")
    if sample_rate is not None and (not isinstance(sample_rate, int) or sample_rate < 1):
        raise UsageError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}.")
    if path.is_dir() or path.suffix.lower() in MANIFEST_SUFFIXES:
        if not path.is_dir():
            _check_file(path, MANIFEST_SUFFIXES, "manifest")
        opener = _open_folder if path.is_dir() else _open_manifest
        rows, file_labels = opener(path, image_size=image_size, clip_seconds=clip_seconds, sample_rate=sample_rate)
    else:
        _check_file(path, (*LATENT_SUFFIXES, *MANIFEST_SUFFIXES), "inputs")
        if image_size is not None:
            raise UsageError(f"--image-size applies to image folders, but {path} is an array file.",
                             hint="Drop --image-size, or resize the arrays yourself.")
        if clip_seconds is not None:
            raise UsageError(f"--clip-seconds applies to audio folders, but {path} is an array file.",
                             hint="Drop --clip-seconds, or cut the arrays yourself.")
        if sample_rate is not None:
            raise UsageError(f"--sample-rate applies to audio folders, but {path} is an array file.",
                             hint="Drop --sample-rate, or resample the arrays yourself (vqdoctor.io.media.resample).")
        rows, file_labels = _open_rows(path, key=key, preferred=INPUT_KEYS, what="inputs")
        if len(rows.shape) < 1 or math.prod(rows.shape) == 0:
            raise DataError(f"Inputs in {path} are empty (shape {rows.shape}).", hint="Point at a file with data.")
    label_values, names = _labels(path, labels, file_labels, rows.shape[0], "inputs")
    return InputSource(path, rows, labels=label_values, label_names=names)


def load_labels(path: str | Path, *, n: int | None = None) -> tuple[np.ndarray, list[str] | None]:
    """One label per sample from ``.npy`` (ints or strings) or ``.txt`` (one per line):
    ``(ids (N,) int64, names or None)``; strings become ids in sorted order. With ``n``, a count
    other than ``n`` is a :class:`DataError` showing both."""
    path = Path(path)
    if n is not None:
        values, names = load_labels(path)
        if len(values) != n:
            raise DataError(f"Labels in {path} have {len(values)} entries but the data has {n} samples.",
                            hint="Give exactly one label per sample, in the same order.")
        return values, names
    _check_file(path, (".npy", ".txt"), "labels")
    if path.suffix.lower() == ".txt":
        values = _text_labels(path)
    else:
        try:
            values = open_npy(path, "labels")
        except (ValueError, OSError, EOFError) as exc:
            raise InputFileError(f"{path} could not be read as labels: {exc}.",
                                 hint="Save labels with numpy.save as ints or strings.") from None
    return _normalise_labels(path, np.asarray(values))


def _text_labels(path: Path) -> np.ndarray:
    """One label per non-blank line of a UTF-8 text file: ints where every line is an integer
    (within int64), else strings."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise InputFileError(f"Labels file {path} is not UTF-8 text (byte {exc.start}, line {line}).",
                             hint="Write one label per line as UTF-8 text, or save them with numpy.save.") from None
    values = [line.strip() for line in text.splitlines() if line.strip()]
    if values and all(_INT_LABEL.fullmatch(v) for v in values):
        fits = [len(v.lstrip("-")) <= 19 and -(1 << 63) <= int(v) < (1 << 63) for v in values]
        if not all(fits):
            bad = values[fits.index(False)]
            raise InputFileError(f"Labels file {path} holds the label {bad[:40]}, too large for an integer id.",
                                 hint="Use labels that fit in 64 bits, or names.")
        return np.array([int(v) for v in values], dtype=np.int64)
    return np.array(values, dtype=str)


def _normalise_labels(path: Path, values: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
    """``(ids (N,) int64 in 0..M-1, names or None)``. Integer labels that are not already
    ``0..M-1`` are remapped through ``np.unique`` (names keep the original values), so a label
    such as 10^9 never sizes an array."""
    values = np.asarray(values)
    if values.ndim != 1:
        values = values.reshape(-1) if values.ndim == 2 and 1 in values.shape else values
    if values.ndim != 1:
        raise DataError(f"Labels in {path} have shape {values.shape}; expected one label per sample (N,).")
    if values.dtype.kind in "US":
        names, ids = np.unique(values.astype(str), return_inverse=True)
        return ids.reshape(-1).astype(np.int64), [str(n) for n in names]
    if values.dtype.kind == "f" and not (np.all(np.isfinite(values)) and np.all(values == np.round(values))):
        raise DataError(f"Labels in {path} have dtype {values.dtype} with non-integer values; expected "
                        "integer ids or strings.", hint="Save one integer (or string) label per sample.")
    if values.dtype.kind not in "biuf":
        raise DataError(f"Labels in {path} have dtype {values.dtype}; expected integer ids or strings.",
                        hint="Save one integer (or string) label per sample.")
    if values.dtype.kind == "f" and values.size and float(np.abs(values).max()) >= 2.0**63:
        raise DataError(f"Labels in {path} hold values up to {float(np.abs(values).max()):g}, too large for "
                        "integer ids.", hint="Save one integer (or string) label per sample.")
    unique, ids = np.unique(values, return_inverse=True)  # in the file's own dtype (uint64 included)
    if unique.size == 0 or (unique[0] == 0 and unique[-1] == unique.size - 1):
        return np.asarray(values, dtype=np.int64), None
    return ids.reshape(-1).astype(np.int64), [str(int(u)) for u in unique]


def _tensor_labels(path: Path, tensor: torch.Tensor) -> tuple[np.ndarray, list[str] | None]:
    """Labels stored as a tensor (any dtype torch holds, bf16 and float8 included)."""
    if tensor.is_floating_point() and tensor.dtype not in (torch.float16, torch.float32, torch.float64):
        tensor = tensor.to(torch.float64)
    try:
        values = tensor.detach().cpu().numpy()
    except TypeError:
        raise DataError(f"Labels in {path} have dtype {tensor.dtype}; expected integer ids.",
                        hint="Save one integer label per sample.") from None
    return _normalise_labels(path, values)


def _labels(
    path: Path, labels: str | Path | None, file_labels: tuple[np.ndarray, list[str] | None] | None,
    n: int, what: str,
) -> tuple[np.ndarray | None, list[str] | None]:
    if labels is not None:
        values, names = load_labels(labels)
        source = Path(labels)
    elif file_labels is not None:
        (values, names), source = file_labels, path
    else:
        return None, None
    if len(values) != n:
        raise DataError(
            f"Labels in {source} have {len(values)} entries but {path} has {n} {what}.",
            hint="Give exactly one label per sample, in the same order.",
        )
    return values, names


def _check_file(path: Path, suffixes: Sequence[str], what: str) -> None:
    if not path.exists():
        raise InputFileError(f"The {what} file {path} does not exist.", hint="Check the path.")
    if path.is_dir():
        raise InputFileError(f"The {what} path {path} is a folder, not a file.",
                             hint=f"Point at a {' / '.join(suffixes)} file.")
    if path.suffix.lower() not in suffixes:
        raise InputFileError(f"The {what} file {path} has an unsupported extension {path.suffix or '(none)'!r}.",
                             hint=f"Supported: {', '.join(suffixes)}.")
    if path.stat().st_size == 0:
        raise DataError(f"The {what} file {path} is empty (0 bytes).", hint="Point at a file with data.")


def _pick_key(path: Path, keys: Sequence[str], key: str | None, preferred: Sequence[str], what: str) -> str:
    if key is not None:
        if key not in keys:
            raise DataError(f"{path} has no array {key!r}; it has: {', '.join(keys) or 'none'}.",
                            hint="Pass one of those names as the key.")
        return key
    data_keys = [k for k in keys if k not in LABEL_KEYS]
    if len(data_keys) == 1:
        return data_keys[0]
    for name in preferred:
        if name in data_keys:
            return name
    raise DataError(
        f"{path} holds {len(data_keys)} arrays ({', '.join(data_keys) or 'none'}) and none is named "
        f"{' / '.join(preferred)}; vqdoctor cannot tell which holds the {what}.",
        hint=f"Name the array '{preferred[0]}' or save only that one.",
    )


def _open_rows(
    path: Path, *, key: str | None, preferred: Sequence[str], what: str
) -> tuple[_Rows, tuple[np.ndarray, list[str] | None] | None]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = open_npy(path, what)
            _check_numeric(path, array.dtype, what)
            return _NumpyRows(array), None
        if suffix == ".npz":
            keys = npz_keys(path)
            name = _pick_key(path, keys, key, preferred, what)
            member = npz_member(path, name)
            _check_numeric(path, member.dtype, what)
            file_labels = None
            label_key = next((k for k in LABEL_KEYS if k in keys and k != name), None)
            if label_key:
                file_labels = _normalise_labels(path, read_npz_array(path, label_key))
            member_rows = _CompressedRows(member) if isinstance(member, CompressedMember) else _NumpyRows(member)
            return member_rows, file_labels
    except NPZ_ERRORS as exc:
        raise InputFileError(f"{path} could not be read as a numpy file: {exc}.",
                             hint="Save arrays with numpy.save / numpy.savez (no pickled objects).") from None
    if suffix == ".safetensors":
        from vqdoctor.io.checkpoints import ST_DTYPES, safetensors_header

        header, _ = safetensors_header(path)
        header.pop("__metadata__", None)
        name = _pick_key(path, list(header), key, preferred, what)
        if ST_DTYPES.get(header[name]["dtype"], torch.bool) in (torch.bool,):
            raise DataError(f"{path}: tensor {name!r} has dtype {header[name]['dtype']}, not numbers.")
        rows = _SafetensorsRows(path, name, tuple(int(s) for s in header[name]["shape"]))
        file_labels = None
        label_key = next((k for k in LABEL_KEYS if k in header and k != name), None)
        if label_key:
            file_labels = _tensor_labels(path, rows._guard(lambda: rows.handle.get_tensor(label_key), label_key))
        return rows, file_labels
    obj: Any = safe_torch_load(path)
    if isinstance(obj, torch.Tensor):
        tensor, file_labels = obj, None
    elif isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        name = _pick_key(path, list(tensors), key, preferred, what)
        tensor = tensors[name]
        label_key = next((k for k in LABEL_KEYS if k in tensors and k != name), None)
        file_labels = _tensor_labels(path, tensors[label_key]) if label_key else None
    else:
        raise DataError(f"{path} holds a {type(obj).__name__}, not a tensor or a dict of tensors.",
                        hint=f"Save the {what} with torch.save(tensor, path) or torch.save({{'latents': t}}, path).")
    if not (tensor.is_floating_point() or tensor.dtype in (torch.uint8, torch.int8, torch.int16,
                                                            torch.int32, torch.int64)):
        raise DataError(f"{path}: the {what} tensor has dtype {tensor.dtype}, not numbers.")
    return _TorchRows(tensor), file_labels


def _check_numeric(path: Path, dtype: np.dtype, what: str) -> None:
    if dtype.kind not in "iuf":
        raise DataError(f"The {what} in {path} have dtype {dtype}, not numbers.",
                        hint="Save them as a float array.")


def _class_folder(path: Path, suffixes: Sequence[str], what: str
                  ) -> tuple[list[Path], tuple[np.ndarray, list[str]] | None]:
    """The files of a folder with one sub-folder per class (class = first-level sub-folder name,
    sorted; its files found recursively, sorted by relative path), or with the files directly in it
    (no labels). Names starting with '.' (hidden files and folders) are skipped; links to folders
    are not followed."""

    def media(folder: Path, recursive: bool) -> list[Path]:
        found = folder.rglob("*") if recursive else folder.iterdir()
        return sorted((p for p in found if p.suffix.lower() in suffixes and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
                      key=lambda p: p.relative_to(folder).parts)

    top = media(path, False)
    per_class = [(d, media(d, True)) for d in sorted(path.iterdir())
                 if d.is_dir() and not d.is_symlink() and not d.name.startswith(".")]
    per_class = [(d, files) for d, files in per_class if files]
    if top and per_class:
        raise DataError(
            f"{path} holds {what} both directly and in sub-folders ({', '.join(d.name for d, _ in per_class[:3])}); "
            "vqdoctor cannot tell which are classes.",
            hint="Put every file in a class sub-folder, or all of them directly in the folder.",
        )
    if not per_class:
        return top, None
    files = [f for _, fs in per_class for f in fs]
    ids = np.concatenate([np.full(len(fs), i, dtype=np.int64) for i, (_, fs) in enumerate(per_class)])
    return files, (ids, [d.name for d, _ in per_class])


def _has(path: Path, suffixes: Sequence[str]) -> bool:
    return any(p.suffix.lower() in suffixes for p in path.rglob("*") if p.is_file())


def _open_folder(path: Path, *, image_size: int | None, clip_seconds: float | None, sample_rate: int | None
                 ) -> tuple[_Rows, tuple[np.ndarray, list[str]] | None]:
    audio = _has(path, AUDIO_SUFFIXES) and not _has(path, IMAGE_SUFFIXES)
    if audio:
        files, file_labels = _class_folder(path, AUDIO_SUFFIXES, "audio clips")
    else:
        files, file_labels = _class_folder(path, IMAGE_SUFFIXES, "images")
        if not files:
            raise DataError(
                f"{path}{os.sep} holds no images ({', '.join(IMAGE_SUFFIXES)}) or audio clips ({', '.join(AUDIO_SUFFIXES)}), "
                "directly or in sub-folders.",
                hint="Point at an image or audio folder (one sub-folder per class), a manifest or an array file.")
    return _open_media(path, files, audio=audio, image_size=image_size, clip_seconds=clip_seconds,
                       sample_rate=sample_rate), file_labels


def _open_manifest(path: Path, *, image_size: int | None, clip_seconds: float | None, sample_rate: int | None
                   ) -> tuple[_Rows, tuple[np.ndarray, list[str] | None] | None]:
    files, labels = read_manifest(path)
    kinds = {"image": IMAGE_SUFFIXES, "audio": AUDIO_SUFFIXES}
    kind = next((k for k, suffixes in kinds.items() if files[0].suffix.lower() in suffixes), None)
    odd = next((i for i, f in enumerate(files) if kind is None or f.suffix.lower() not in kinds[kind]), None)
    if odd is not None:
        allowed = ", ".join(kinds[kind]) if kind else ", ".join(IMAGE_SUFFIXES + AUDIO_SUFFIXES)
        raise DataError(f"Manifest {path}: entry {odd + 1} ({files[odd]}) is not "
                        f"{'an ' + kind + ' file' if kind else 'an image or audio file'} ({allowed}).",
                        hint="List only images, or only audio clips, in one manifest.")
    rows = _open_media(path, files, audio=kind == "audio", image_size=image_size, clip_seconds=clip_seconds,
                       sample_rate=sample_rate)
    return rows, (_normalise_labels(path, label_values(labels)) if labels is not None else None)


def _open_media(path: Path, files: list[Path], *, audio: bool, image_size: int | None, clip_seconds: float | None,
                sample_rate: int | None) -> _Rows:
    if audio:
        if image_size is not None:
            raise UsageError(f"--image-size applies to images, but {path} holds audio clips.",
                             hint="Use --clip-seconds and --sample-rate for audio.")
        return _open_audio(files, clip_seconds, sample_rate)
    for flag, value in (("--clip-seconds", clip_seconds), ("--sample-rate", sample_rate)):
        if value is not None:
            raise UsageError(f"{flag} applies to audio clips ({', '.join(AUDIO_SUFFIXES)}), but {path} holds images.",
                             hint=f"Drop {flag}, or point at a folder (or manifest) of audio clips.")
    return _open_images(files, image_size)


def _open_audio(files: list[Path], clip_seconds: float | None, sample_rate: int | None) -> _Rows:
    headers = [audio_info(f) for f in files]  # (rate, frames, channels), headers only
    rates = [h[0] for h in headers]
    rate = sample_rate if sample_rate is not None else _common_rate(files, rates)
    if clip_seconds is not None:
        if clip_seconds <= 0:
            raise UsageError(f"--clip-seconds must be positive, got {clip_seconds}.")
        clip = max(1, round(clip_seconds * rate))
    else:
        lengths = [resampled_length(h[1], h[0], rate) for h in headers]
        clip = lengths[0]
        odd = next((i for i, n in enumerate(lengths) if n != clip), None)
        if odd is not None:
            at = f" at {rate} Hz" if len(set(rates)) > 1 or rates[0] != rate else ""
            raise DataError(
                f"Audio clips differ in length{at} ({files[0]}: {clip} samples, {files[odd]}: {lengths[odd]}).",
                hint="Pass --clip-seconds S to cut (or zero-pad) every clip to S seconds.",
            )
    return _AudioRows(files, clip=clip, rate=rate, rates=rates)


def _common_rate(files: list[Path], rates: list[int]) -> int:
    """The clips' one sample rate; several rates are a DataError naming each (with a file)."""
    first: dict[int, Path] = {}
    for f, r in zip(files, rates):
        first.setdefault(r, f)
    if len(first) == 1:
        return rates[0]
    shown = "; ".join(f"{r} Hz ({sum(1 for x in rates if x == r)} clip(s), e.g. {f})" for r, f in sorted(first.items()))
    raise DataError(f"The audio clips have {len(first)} sample rates: {shown}.",
                    hint="Pass --sample-rate R to resample every clip to R Hz (polyphase filter), e.g. the rate "
                    "the model was trained at.")


def _open_images(files: list[Path], image_size: int | None) -> _Rows:
    mode, size = decode_image(files[0])
    gray = mode in _GRAY_MODES
    if image_size is not None:
        size = (image_size, image_size)
    return _ImageRows(files, gray=gray, size=size, resize=image_size is not None)


__all__ = ["InputSource", "LatentSource", "load_labels", "open_inputs", "open_latents"]
