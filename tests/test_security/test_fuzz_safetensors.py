"""Hostile safetensors headers: every mutation loads cleanly or is one InputFileError naming the
file, the tensor and the bad value; nothing is allocated from a claim the file cannot back, and
the file is never modified. Also a few through the CLI (exit 0, or one paragraph with exit 2)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from typer.testing import CliRunner

from vqdoctor.cli.app import app
from vqdoctor.errors import InputFileError, VqdoctorError
from vqdoctor.io.checkpoints import load_checkpoint

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
runner = CliRunner()

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                        st.text(max_size=8), st.sampled_from([10**12, 2**63, -1, 0, "F32", "F64", "X9"]))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                               st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                          max_leaves=8)


def _valid(tmp: Path) -> tuple[dict, bytes]:
    """A small real file: header (as a dict) and data bytes."""
    path = tmp / "base.safetensors"
    g = torch.Generator().manual_seed(0)
    save_file({"quantizer.embedding.weight": torch.randn(16, 4, generator=g),
               "encoder.weight": torch.randn(4, 3, generator=g)}, str(path), metadata={"format": "pt"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(path: Path, header: object, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    blob = struct.pack("<Q", len(text)) + text + data
    path.write_bytes(blob)
    return blob


def _load_everything(path: Path) -> None:
    """Load and touch every tensor; only VqdoctorError may come out."""
    ckpt = load_checkpoint(path)
    for key in ckpt.state:
        t = ckpt.state[key]
        assert tuple(t.shape) == ckpt.state.shape(key)


def _clean(path: Path, blob: bytes) -> None:
    try:
        _load_everything(path)
    except VqdoctorError as err:
        assert str(path) in err.message
    assert path.read_bytes() == blob  # inputs are never touched


@FUZZ
@given(entry=st.sampled_from(["quantizer.embedding.weight", "encoder.weight", "__metadata__"]),
       field=st.sampled_from(["dtype", "shape", "data_offsets", None, "extra"]), value=json_value)
def test_mutated_entries_load_or_refuse_cleanly(tmp_path, entry, field, value):
    header, data = _valid(tmp_path)
    if field is None or entry == "__metadata__":
        header[entry] = value
    else:
        header[entry][field] = value
    path = tmp_path / "mutated.safetensors"
    _clean(path, _write(path, header, data))


@FUZZ
@given(begin=st.integers(-(2**40), 2**40), end=st.integers(-(2**40), 2**40),
       rows=st.integers(0, 10**13), trailing=st.integers(-64, 64))
def test_offsets_and_shapes_never_allocate_from_the_header(tmp_path, begin, end, rows, trailing):
    header, data = _valid(tmp_path)
    header["quantizer.embedding.weight"]["data_offsets"] = [begin, end]
    header["quantizer.embedding.weight"]["shape"] = [rows, 4]
    data = data[:max(0, len(data) + trailing)] if trailing < 0 else data + b"\0" * trailing
    path = tmp_path / "offsets.safetensors"
    _clean(path, _write(path, header, data))


@FUZZ
@given(data=st.data())
def test_byte_flips_and_truncation(tmp_path, data):
    header, payload = _valid(tmp_path)
    blob = bytearray(_write(tmp_path / "x.safetensors", header, payload))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    blob = blob[: data.draw(st.integers(1, len(blob)))]
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(bytes(blob))
    _clean(path, bytes(blob))


def _entry(dtype="F32", shape=(16, 4), offsets=(0, 256)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize(("header", "data_len", "named"), [
    ({"a": 5}, 0, ["'a'", "5"]),
    ({"a": {"shape": [16, 4], "data_offsets": [0, 256]}}, 256, ["'a'", "dtype None"]),
    ({"a": _entry(dtype="F33")}, 256, ["'a'", "'F33'"]),
    ({"a": _entry(shape=(16, -4))}, 256, ["'a'", "[16, -4]"]),
    ({"a": _entry(shape=(10**12, 4), offsets=(0, 256))}, 256, ["'a'", "[1000000000000, 4]", "256 bytes"]),
    ({"a": _entry(offsets=(-256, 0))}, 256, ["'a'", "[-256, 0]"]),
    ({"a": _entry(offsets=(0, 256)), "b": _entry(offsets=(0, 256))}, 256, ["overlaps"]),
    ({"a": _entry(offsets=(0, 256))}, 100, ["truncated", "'a'"]),
    ({"__metadata__": [1], "a": _entry()}, 256, ["__metadata__", "[1]"]),
    ({"__metadata__": {"k": 3}, "a": _entry()}, 256, ["'k'", "3"]),
])
def test_each_bad_header_is_named(tmp_path, header, data_len, named):
    path = tmp_path / "bad.safetensors"
    _write(path, header, b"\0" * data_len)
    with pytest.raises(InputFileError) as info:
        load_checkpoint(path)
    for fragment in [str(path), *named]:
        assert fragment in info.value.message


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entry=st.sampled_from(["quantizer.embedding.weight", "__metadata__"]), value=json_value)
def test_cli_inspect_exit_0_or_one_paragraph(tmp_path, entry, value):
    header, data = _valid(tmp_path)
    header[entry] = value
    path = tmp_path / "cli.safetensors"
    blob = _write(path, header, data)
    res = runner.invoke(app, ["inspect", str(path), "--json", str(tmp_path / "r.json")])
    assert res.exit_code in (0, 2), res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    if res.exit_code == 2:
        assert res.output.startswith("Error: ") and "Traceback" not in res.output
    assert path.read_bytes() == blob


def test_file_damaged_after_the_header_check(tmp_path):
    """A checkpoint truncated between loading and reading a tensor (a concurrent copy, a full
    disk) is one clean error naming the tensor."""
    save_file({"latents": torch.randn(64, 4)}, str(tmp_path / "z.safetensors"))
    path = tmp_path / "z.safetensors"
    ckpt = load_checkpoint(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputFileError, match="tensor 'latents' could not be read"):
        ckpt.state["latents"]
