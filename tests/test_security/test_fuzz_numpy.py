"""Hostile .npy / .npz files: headers claiming more rows than the file holds are refused before
allocation, compressed members stream in bounded memory (a zip bomb costs a batch, not its
inflated size), and whole-member reads are refused beyond the stated budget."""

from __future__ import annotations

import contextlib
import io
import os
import resource
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memory import traced_peak
from safetensors.torch import save_file
from typer.testing import CliRunner

from vqdoctor.cli.app import app
from vqdoctor.errors import InputFileError, VqdoctorError
from vqdoctor.io.checkpoints import load_checkpoint
from vqdoctor.io.data import load_labels, open_latents
from vqdoctor.io.headers import NPZ_BUDGET_ENV

FUZZ = settings(max_examples=50, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
runner = CliRunner()


def _npy_bytes(shape: tuple[int, ...], descr: str = "<f4", fortran: bool = False, data: bytes = b"") -> bytes:
    """A .npy file whose header says ``shape`` / ``descr``, followed by ``data`` (of any length)."""
    header = repr({"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}).encode("latin1")
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


def _zip(path: Path, members: dict[str, bytes], compression: int) -> bytes:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return path.read_bytes()


def _consume(path: Path) -> None:
    """Open as latents and read a few batches, and as a checkpoint; only VqdoctorError may come out."""
    for action in (lambda: [b for b in open_latents(path).batches(64, max_vectors=256)],
                   lambda: [load_checkpoint(path).state[k] for k in load_checkpoint(path).state]):
        try:
            action()
        except VqdoctorError as err:
            assert str(path) in err.message


shapes = st.lists(st.integers(0, 10**13), min_size=0, max_size=4).map(tuple)
descrs = st.sampled_from(["<f4", "<f8", "<i8", "|u1", "<f2", "|b1", "<c8", "|V8", "|S4"])


@FUZZ
@given(shape=shapes, descr=descrs, fortran=st.booleans(), n_bytes=st.integers(0, 512))
def test_npy_headers(tmp_path, shape, descr, fortran, n_bytes):
    path = tmp_path / "x.npy"
    blob = _npy_bytes(shape, descr, fortran, bytes(range(256)) * 2)
    path.write_bytes(blob[: len(blob) - 512 + n_bytes])
    before = path.read_bytes()
    _consume(path)
    assert path.read_bytes() == before


@FUZZ
@given(shape=shapes, descr=descrs, n_bytes=st.integers(0, 512), compressed=st.booleans(),
       labels=st.one_of(st.none(), shapes))
def test_npz_headers(tmp_path, shape, descr, n_bytes, compressed, labels):
    members = {"x.npy": _npy_bytes(shape, descr, False, b"\1" * n_bytes)}
    if labels is not None:
        members["y.npy"] = _npy_bytes(labels, "<i8", False, b"\0" * 64)
    path = tmp_path / "x.npz"
    before = _zip(path, members, zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED)
    _consume(path)
    assert path.read_bytes() == before


def test_header_claiming_1e12_rows_is_refused_before_allocation(tmp_path):
    path = tmp_path / "huge.npy"
    path.write_bytes(_npy_bytes((10**12, 4), data=b"\0" * 64))
    with pytest.raises(InputFileError, match=r"\(1000000000000, 4\).*64 bytes"):
        open_latents(path)
    zpath = tmp_path / "huge.npz"
    _zip(zpath, {"x.npy": path.read_bytes()}, zipfile.ZIP_DEFLATED)
    with pytest.raises(InputFileError, match="1000000000000"):
        open_latents(zpath)
    with pytest.raises(InputFileError, match="1000000000000"):
        load_checkpoint(zpath)


def _bomb(path: Path, rows: int) -> None:
    """A compressed npz of ``rows`` x 4 float32 zeros (16 bytes a row, about 1000:1 compression)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros((rows, 4), np.float32))
    _zip(path, {"z.npy": buf.getvalue()}, zipfile.ZIP_DEFLATED)


def test_compressed_member_streams_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb.npz"
    rows = 4_000_000  # 64 MB inflated, about 64 KB on disk
    _bomb(path, rows)
    assert path.stat().st_size < 1 << 20
    with traced_peak() as peaks:
        src = open_latents(path)
        got = sum(x.shape[0] for x, _ in src.batches(4096, max_vectors=20_000))
    peak = peaks[0]
    assert src.n_vectors == rows and got == 20_000
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for a 64 MiB member"  # read whole it would be >= 64 MiB


def test_compressed_member_rows_agree_with_numpy(tmp_path):
    x = np.random.default_rng(0).standard_normal((1000, 3)).astype(np.float32)
    np.savez_compressed(tmp_path / "c.npz", latents=x)
    src = open_latents(tmp_path / "c.npz")
    streamed = torch.cat([b for b, _ in src.batches(128)]).numpy()
    np.testing.assert_array_equal(streamed, x)
    taken, _ = src.take(np.array([999, 3, 500, 3]))
    np.testing.assert_array_equal(taken.numpy(), x[[999, 3, 500, 3]])


def test_whole_member_reads_respect_the_budget(tmp_path, monkeypatch):
    path = tmp_path / "codes.npz"
    np.savez_compressed(path, codebook=np.zeros((65536, 8), np.float32))  # 2 MiB inflated
    monkeypatch.setenv(NPZ_BUDGET_ENV, "1")
    ckpt = load_checkpoint(path)
    with pytest.raises(InputFileError, match=r"(?s)over the 1 MiB budget.*VQDOCTOR_NPZ_BUDGET_MB"):
        ckpt.state["codebook"]
    monkeypatch.setenv(NPZ_BUDGET_ENV, "4")
    assert tuple(load_checkpoint(path).state["codebook"].shape) == (65536, 8)


@contextlib.contextmanager
def _address_space_headroom(extra: int):
    """Cap this process's address space at its current size + ``extra`` bytes (Linux), so an
    allocation sized by a hostile value fails instead of succeeding slowly on a big machine."""
    statm = Path("/proc/self/statm")
    if not statm.exists():
        pytest.skip("needs /proc/self/statm")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    current = int(statm.read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (current + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_labels_1e9_are_remapped_not_allocated(tmp_path):
    labels = np.zeros(300, np.int64)
    labels[::2] = 10**9
    np.save(tmp_path / "y.npy", labels)
    ids, names = load_labels(tmp_path / "y.npy")
    assert names == ["0", "1000000000"] and ids.tolist() == [1, 0] * 150
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(16, 4, generator=g)
    save_file({"quantizer.embedding.weight": codes}, str(tmp_path / "m.safetensors"))
    np.save(tmp_path / "z.npy", np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32))
    with _address_space_headroom(2 << 30):  # 10^9 + 1 slots of int64 would need 8 GB more
        res = runner.invoke(app, ["inspect", str(tmp_path / "m.safetensors"), "--latents", str(tmp_path / "z.npy"),
                                  "--labels", str(tmp_path / "y.npy"), "--projection", "none", "--json", "-"])
    assert res.exit_code == 0, res.output
    assert '"1000000000"' in res.output  # the mode keeps its name


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(shape=st.lists(st.integers(0, 10**13), min_size=1, max_size=3).map(tuple), descr=descrs,
       compressed=st.booleans(), labels=st.one_of(st.none(), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8)))
def test_cli_latents_exit_0_or_one_paragraph(tmp_path, shape, descr, compressed, labels):
    save_file({"quantizer.embedding.weight": torch.randn(16, 4, generator=torch.Generator().manual_seed(0))},
              str(tmp_path / "m.safetensors"))
    members = {"latents.npy": _npy_bytes(shape, descr, False, bytes(range(256)) * 4)}
    if labels is not None:
        members["y.npy"] = _npy_bytes((len(labels),), "<i8", False, np.array(labels, np.int64).tobytes())
    path = tmp_path / "z.npz"
    before = _zip(path, members, zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED)
    res = runner.invoke(app, ["inspect", str(tmp_path / "m.safetensors"), "--latents", str(path),
                              "--projection", "none", "--json", str(tmp_path / "r.json")])
    assert res.exit_code in (0, 2), res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    if res.exit_code == 2:
        assert res.output.startswith("Error: ") and "Traceback" not in res.output
    assert path.read_bytes() == before


@FUZZ
@given(data=st.data(), compressed=st.booleans())
def test_npz_byte_flips_and_truncation(tmp_path, data, compressed):
    """Damage anywhere in the archive (local headers, central directory, deflate stream, CRC)."""
    path = tmp_path / "z.npz"
    x = np.arange(64, dtype=np.float32).reshape(16, 4)
    (np.savez_compressed if compressed else np.savez)(path, latents=x, y=np.arange(16) % 3)
    blob = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    blob = blob[: data.draw(st.integers(1, len(blob)))]
    path.write_bytes(bytes(blob))
    _consume(path)
    assert path.read_bytes() == bytes(blob)
