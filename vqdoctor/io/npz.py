"""``.npz`` members in bounded memory.

A stored (uncompressed) member is memory-mapped; a compressed member is streamed row by row
from the zip (:class:`CompressedMember`), so a small file that inflates to gigabytes (a zip bomb)
costs a batch of memory, and ``--max-vectors`` stops the inflation early. A member read whole
(labels, a codebook) is checked against :func:`~vqdoctor.io.headers.npz_budget_bytes` first. Every
array header is checked against what the zip entry declares before anything is allocated."""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from vqdoctor.errors import InputFileError
from vqdoctor.io.headers import check_array_fits, check_npz_member, read_npy_header

# what zipfile / zlib / numpy raise on a damaged, encrypted or odd archive
NPZ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError,
              KeyError)


class CompressedMember:
    """A C-ordered array inside a compressed zip entry, read by rows in file order (reading
    backwards re-opens the entry and skips forward)."""

    def __init__(self, path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.name, self.shape, self.dtype = path, name, shape, dtype
        self._row_bytes = math.prod(shape[1:]) * dtype.itemsize
        self._zip: zipfile.ZipFile | None = None
        self._fh: IO[bytes] | None = None
        self._row = 0

    def _seek(self, row: int) -> IO[bytes]:
        if self._fh is None or row < self._row:
            self.close()
            self._zip = zipfile.ZipFile(self.path)
            self._fh = self._zip.open(self.name + ".npy")
            read_npy_header(self._fh)
            self._row = 0
        while self._row < row:  # skip forward in bounded blocks
            step = min(row - self._row, max(1, (16 << 20) // max(1, self._row_bytes)))
            self._take(step)
        return self._fh

    def _take(self, rows: int) -> bytes:
        if self._fh is None:
            self._seek(self._row)
        need = rows * self._row_bytes
        data = self._fh.read(need)  # type: ignore[union-attr]
        if len(data) != need:
            raise ValueError(f"member {self.name!r} ends before row {self._row + len(data) // max(1, self._row_bytes)}"
                             " (truncated)")
        self._row += rows
        return data

    def read(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.shape[0])
        if stop <= start:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        try:
            self._seek(start)
            data = self._take(stop - start)
        except NPZ_ERRORS as exc:
            self.close()
            raise InputFileError(f"{self.path}: member {self.name!r} could not be read: {exc}.",
                                 hint="The archive is damaged; save the arrays again with numpy.savez.") from None
        return np.frombuffer(data, dtype=self.dtype).reshape(stop - start, *self.shape[1:])

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Rows in sorted unique order, one pass over the entry."""
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        for i, r in enumerate(rows):
            out[i] = self.read(int(r), int(r) + 1)[0]
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._zip is not None:
            self._zip.close()
        self._fh = self._zip = None


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"bad zip entry header for {info.filename!r}")
        return info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(
            local[28:30], "little")


def npz_member(path: Path, name: str) -> np.ndarray | CompressedMember:
    """Member ``name`` (without ``.npy``): memory-mapped when stored, streamed when compressed.
    Raises ValueError/OSError/BadZipFile for what numpy or zipfile cannot read and
    :class:`~vqdoctor.errors.InputFileError` for a header the entry cannot back."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name + ".npy")
        with zf.open(info) as fh:
            shape, fortran, dtype = read_npy_header(fh)
            header_bytes = fh.tell()
    check_array_fits(path, name, shape, dtype, info.file_size - header_bytes)
    if info.compress_type == zipfile.ZIP_STORED:
        offset = _data_offset(path, info) + header_bytes
        check_array_fits(path, name, shape, dtype, path.stat().st_size - offset)
        if math.prod(shape) == 0:
            return np.empty(shape, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
    if fortran and len(shape) > 1:  # rows are not contiguous: read whole, within the budget
        return read_npz_array(path, name)
    return CompressedMember(path, name, shape, dtype)


def read_npz_array(path: Path, name: str, *, budget: int | None = None) -> np.ndarray:
    """Member ``name`` read whole, refused before inflation where it would exceed the budget."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name + ".npy")
        with zf.open(info) as fh:
            shape, _, dtype = read_npy_header(fh)
        check_npz_member(path, name, info, shape, dtype, budget=budget)
        with zf.open(info) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)


def npz_keys(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return [i.filename[:-4] for i in zf.infolist() if i.filename.endswith(".npy")]
