"""Checks of what a file's header claims, before anything is allocated from it.

A header is data a stranger wrote: a safetensors header may name 10^12-row tensors, overlapping
offsets or a non-object ``__metadata__``; an ``.npy`` header may claim more rows than the file
holds; a compressed ``.npz`` member may inflate a 3 MB file to gigabytes. Every check here raises
:class:`~vqdoctor.errors.InputFileError` naming the file, the entry and the bad value, so that no
reader ever allocates memory (or calls a library that would) on a claim the file cannot back."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from vqdoctor.errors import InputFileError

# bytes per element of the safetensors dtypes (the format's full list; torch may lack a few)
ST_ITEMSIZE: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
ST_REMEDY = "Copy or download the file again, or re-save it with safetensors.torch.save_file."

# The most bytes one compressed .npz member may inflate to (VQDOCTOR_NPZ_BUDGET_MB overrides).
NPZ_BUDGET_MB_DEFAULT = 1024
NPZ_BUDGET_ENV = "VQDOCTOR_NPZ_BUDGET_MB"


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_safetensors_header(path: Path, header: Any, data_size: int) -> None:
    """Validate a parsed safetensors header against the ``data_size`` bytes that follow it.

    Checks, for every tensor entry: an object with a known string ``dtype``, ``shape`` a list of
    non-negative ints, ``data_offsets`` two ints with ``0 <= begin <= end <= data_size`` and
    ``end - begin == numel * itemsize``; the entries tile the data without gaps or overlaps (as
    the safetensors library requires); ``__metadata__`` is an object of str -> str."""
    if not isinstance(header, dict):
        raise InputFileError(f"{path} is not a safetensors file (its header is a JSON "
                             f"{type(header).__name__}, not an object).", hint=ST_REMEDY)
    metadata = header.get("__metadata__")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise InputFileError(f"{path}: the safetensors '__metadata__' is {_show(metadata)}, not an "
                                 "object of strings.", hint=ST_REMEDY)
        for k, v in metadata.items():
            if not isinstance(v, str):
                raise InputFileError(f"{path}: the safetensors '__metadata__' entry {k!r} is {_show(v)}, "
                                     "not a string.", hint=ST_REMEDY)
    spans: list[tuple[int, int, str]] = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        where = f"{path}: tensor {key!r}"
        if not isinstance(info, dict):
            raise InputFileError(f"{where} is described by {_show(info)}, not an object with dtype, shape "
                                 "and data_offsets.", hint=ST_REMEDY)
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in ST_ITEMSIZE:
            raise InputFileError(f"{where} has dtype {_show(dtype)}, not one of {', '.join(ST_ITEMSIZE)}.",
                                 hint=ST_REMEDY)
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise InputFileError(f"{where} has shape {_show(shape)}, not a list of non-negative integers.",
                                 hint=ST_REMEDY)
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)):
            raise InputFileError(f"{where} has data_offsets {_show(offsets)}, not two integers [begin, end].",
                                 hint=ST_REMEDY)
        begin, end = offsets
        if not 0 <= begin <= end:
            raise InputFileError(f"{where} has data_offsets {_show(offsets)}: need 0 <= begin <= end.",
                                 hint=ST_REMEDY)
        if end > data_size:
            raise InputFileError(f"{path} is truncated: tensor {key!r} needs bytes up to {end} but the file "
                                 f"holds {data_size} bytes of data.", hint=ST_REMEDY)
        need = math.prod(shape) * ST_ITEMSIZE[dtype]
        if end - begin != need:
            raise InputFileError(f"{where} has shape {_show(shape)} of {dtype} ({need} bytes) but data_offsets "
                                 f"{_show(offsets)} span {end - begin} bytes.", hint=ST_REMEDY)
        spans.append((begin, end, key))
    position, previous = 0, None
    for begin, end, key in sorted(spans):
        if begin < position:
            raise InputFileError(f"{path}: tensor {key!r} (bytes {begin}..{end}) overlaps tensor {previous!r} "
                                 f"(which ends at {position}).", hint=ST_REMEDY)
        if begin > position:
            raise InputFileError(f"{path}: tensor {key!r} starts at byte {begin} but the data before it ends "
                                 f"at {position} (a gap the format does not allow).", hint=ST_REMEDY)
        position, previous = end, key
    if position != data_size:
        raise InputFileError(f"{path}: its tensors cover {position} bytes of data but the file holds "
                             f"{data_size} after the header (trailing bytes).", hint=ST_REMEDY)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_array_fits(path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype, available: int) -> None:
    """Refuse an array header whose ``shape`` x ``dtype`` needs more than the ``available`` bytes
    the file holds after the header (checked before anything is allocated or mapped)."""
    need = math.prod(int(s) for s in shape) * int(dtype.itemsize)
    if need > available:
        raise InputFileError(
            f"{path}: array {key!r} claims shape {tuple(int(s) for s in shape)} of {dtype} ({need:,} bytes) "
            f"but the file holds only {available:,} bytes for it (truncated or a forged header).",
            hint="Save the array again with numpy.save / numpy.savez.",
        )


def npz_budget_bytes() -> int:
    """The most bytes one compressed ``.npz`` member may inflate to."""
    text = os.environ.get(NPZ_BUDGET_ENV)
    try:
        mb = int(text) if text else NPZ_BUDGET_MB_DEFAULT
    except ValueError:
        mb = NPZ_BUDGET_MB_DEFAULT
    return max(1, mb) << 20


def check_npz_member(path: Path, key: str, info: Any, shape: tuple[int, ...], dtype: np.dtype,
                     *, budget: int | None = None) -> None:
    """A compressed ``.npz`` member is inflated to memory when read: its array header must agree
    with the zip entry's declared uncompressed size, and both must stay within the budget."""
    budget = npz_budget_bytes() if budget is None else budget
    need = math.prod(int(s) for s in shape) * int(dtype.itemsize)
    declared = int(info.file_size)
    if need > declared:
        raise InputFileError(
            f"{path}: member {key!r} claims shape {tuple(shape)} of {dtype} ({need:,} bytes) but its zip "
            f"entry declares {declared:,} uncompressed bytes (truncated or a forged header).",
            hint="Save the arrays again with numpy.savez.",
        )
    if info.compress_type != 0 and max(need, declared) > budget:
        raise InputFileError(
            f"{path}: compressed member {key!r} inflates to {max(need, declared):,} bytes, over the "
            f"{budget >> 20} MiB budget for compressed .npz members.",
            hint=f"Store it uncompressed (numpy.savez, or unzip the file and numpy.save the member as .npy, "
            f"which is memory-mapped), or raise the budget with {NPZ_BUDGET_ENV}=MB.",
        )



def read_npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the ``.npy`` stream ``fh``, left at the data's start.
    Raises ValueError for a stream that is not ``.npy`` or holds Python objects."""
    version = np.lib.format.read_magic(fh)
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"unsupported .npy format version {version}")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    if dtype.hasobject:
        raise ValueError("the array holds Python objects (pickles are not loaded)")
    return tuple(int(s) for s in shape), bool(fortran), dtype


def open_npy(path: Path, key: str) -> np.ndarray:
    """A ``.npy`` file memory-mapped read-only, its header checked against the file size first
    (a header claiming 10^12 rows is refused, never allocated). Raises ValueError/OSError for a
    file numpy cannot read, :class:`InputFileError` for one whose header the file cannot back."""
    with open(path, "rb") as fh:
        shape, fortran, dtype = read_npy_header(fh)
        offset = fh.tell()
    check_array_fits(path, key, shape, dtype, path.stat().st_size - offset)
    if math.prod(shape) == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
