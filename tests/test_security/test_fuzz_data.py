"""Hostile raw data and side files: WAV headers, PNGs, labels files and Hugging Face folders.
Property: the loader returns data or raises one VqdoctorError naming the file; memory stays
bounded whatever a header claims; the inputs are byte-identical afterwards."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from memory import traced_peak
from PIL import Image
from safetensors.torch import save_file

from vqdoctor.errors import DataError, InputFileError, VqdoctorError
from vqdoctor.io.checkpoints import load_checkpoint
from vqdoctor.io.data import load_labels, open_inputs, open_latents
from vqdoctor.io.media import MAX_IMAGE_PIXELS

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _read_all(folder: Path, **kwargs) -> None:
    """Open ``folder`` as inputs and read every item; only VqdoctorError may come out."""
    before = _snapshot(folder)
    try:
        src = open_inputs(folder, **kwargs)
        for _ in src.batches(4):
            pass
    except VqdoctorError as err:
        assert str(folder) in err.message
    assert _snapshot(folder) == before


# --------------------------------------------------------------------------------------------
# WAV


def _wav(*, tag=1, channels=1, rate=8000, bits=16, data_size=None, data=b"\0\1" * 100) -> bytes:
    width = (bits + 7) // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * width & 0xFFFFFFFF,
                      channels * width & 0xFFFF, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


@FUZZ
@given(tag=st.sampled_from([1, 3, 0xFFFE, 0, 7]), channels=st.integers(0, 9), rate=st.integers(0, 2**32 - 1),
       bits=st.sampled_from([0, 4, 8, 16, 24, 32, 40, 64, 65]), data_size=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
       n_bytes=st.integers(0, 300), clip=st.one_of(st.none(), st.just(0.01)))
def test_wav_headers(tmp_path, tag, channels, rate, bits, data_size, n_bytes, clip):
    folder = tmp_path / "audio"
    folder.mkdir(exist_ok=True)
    (folder / "a.wav").write_bytes(_wav(tag=tag, channels=channels, rate=rate, bits=bits, data_size=data_size,
                                        data=bytes(range(256))[:n_bytes]))
    _read_all(folder, clip_seconds=clip)


@FUZZ
@given(data=st.data())
def test_wav_byte_flips_and_truncation(tmp_path, data):
    folder = tmp_path / "audio"
    folder.mkdir(exist_ok=True)
    blob = bytearray(_wav(channels=2, bits=24, data=bytes(range(240))))
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    (folder / "a.wav").write_bytes(bytes(blob[: data.draw(st.integers(1, len(blob)))]))
    _read_all(folder)


@pytest.mark.parametrize(("bits", "message"), [(40, "40-bit"), (64, "64-bit")])
def test_wide_wav_refused_naming_the_width(tmp_path, bits, message):
    (tmp_path / "a.wav").write_bytes(_wav(bits=bits, data=b"\0" * (bits // 8) * 10))
    with pytest.raises(InputFileError, match=message):
        open_inputs(tmp_path)


def test_wav_claiming_4gb_is_refused_without_reading(tmp_path):
    (tmp_path / "a.wav").write_bytes(_wav(data_size=2**32 - 2, data=b"\0" * 200))
    with traced_peak() as peaks:
        with pytest.raises(InputFileError, match=r"claims 2,147,483,647 frames"):
            open_inputs(tmp_path)
    peak = peaks[0]
    assert peak < 16 << 20


# --------------------------------------------------------------------------------------------
# images


def _png(size=(8, 8), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color=(10, 20, 30) if mode == "RGB" else 7).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with one tiny IDAT (what a decompression bomb looks like)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@FUZZ
@given(data=st.data())
def test_mutated_pngs(tmp_path, data):
    folder = tmp_path / "img"
    folder.mkdir(exist_ok=True)
    (folder / "a.png").write_bytes(_png())
    blob = bytearray(_png())
    for _ in range(data.draw(st.integers(0, 6))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    (folder / "b.png").write_bytes(bytes(blob[: data.draw(st.integers(1, len(blob)))]))
    _read_all(folder, image_size=data.draw(st.one_of(st.none(), st.just(8))))


def test_decompression_bomb_png_refused_by_its_header(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_header_only(20000, 20000))
    with traced_peak() as peaks:
        with pytest.raises(DataError, match=r"bomb.png is over the 33,554,432-pixel cap .*400000000 pixels"):
            open_inputs(tmp_path)
    peak = peaks[0]
    assert peak < 16 << 20
    (tmp_path / "bomb.png").write_bytes(_png_header_only(8000, 8000))  # under Pillow's guard, over ours
    with pytest.raises(DataError, match=r"8000x8000 = 64,000,000 pixels, over the 33,554,432-pixel cap"):
        open_inputs(tmp_path)
    side = int(MAX_IMAGE_PIXELS**0.5)
    (tmp_path / "bomb.png").write_bytes(_png_header_only(side, side))  # under the cap: decoded, found truncated
    with pytest.raises(InputFileError, match="bomb.png could not be decoded"):
        next(open_inputs(tmp_path).batches(1))


# --------------------------------------------------------------------------------------------
# labels files


@FUZZ
@given(blob=st.one_of(st.binary(max_size=64), st.lists(st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=5)),
                                                        max_size=12).map(lambda v: "\n".join(map(str, v)).encode())))
def test_text_labels(tmp_path, blob):
    path = tmp_path / "y.txt"
    path.write_bytes(blob)
    try:
        ids, names = load_labels(path)
    except VqdoctorError as err:
        assert str(path) in err.message
    else:
        assert ids.dtype == np.int64 and (ids.size == 0 or 0 <= ids.min() <= ids.max() < ids.size)
        assert names is None or len(names) == len(np.unique(ids))
    assert path.read_bytes() == blob


@FUZZ
@given(values=arrays(st.sampled_from([np.int8, np.int64, np.uint64, np.float16, np.float64, np.bool_]),
                     st.integers(1, 40)))
def test_npy_labels_become_dense_ids_that_keep_their_values(tmp_path, values):
    path = tmp_path / "y.npy"
    np.save(path, values)
    try:
        ids, names = load_labels(path)
    except DataError as err:  # NaN, fractions, values beyond int64
        assert str(path) in err.message and values.dtype.kind == "f"
        return
    assert ids.dtype == np.int64 and 0 <= ids.min() and ids.max() == len(np.unique(values)) - 1
    shown = [str(int(v)) for v in values]
    assert [names[i] for i in ids] == shown if names is not None else [str(i) for i in ids] == shown


def test_bf16_and_uint64_labels(tmp_path):
    save_file({"latents": torch.randn(6, 4), "labels": torch.tensor([0, 2, 2, 0, 7, 7], dtype=torch.bfloat16)},
              str(tmp_path / "z.safetensors"))
    src = open_latents(tmp_path / "z.safetensors")
    assert src.labels.tolist() == [0, 1, 1, 0, 2, 2] and src.label_names == ["0", "2", "7"]
    np.save(tmp_path / "y.npy", np.array([2**64 - 1, 0, 2**64 - 1], np.uint64))
    ids, names = load_labels(tmp_path / "y.npy")
    assert ids.tolist() == [1, 0, 1] and names == ["0", str(2**64 - 1)]


def test_labels_bad_utf8_and_wrong_count(tmp_path):
    (tmp_path / "y.txt").write_bytes(b"cat\ndog\n\xff\xfe\n")
    with pytest.raises(InputFileError, match="not UTF-8 text.*line 3"):
        load_labels(tmp_path / "y.txt")
    (tmp_path / "y.txt").write_text("\u00b9\n2\n")  # a superscript one is a name, not the integer 1
    assert load_labels(tmp_path / "y.txt")[1] == ["2", "\u00b9"]
    (tmp_path / "y.txt").write_text("1\n2\n")
    with pytest.raises(DataError, match="2 entries but the data has 3 samples"):
        load_labels(tmp_path / "y.txt", n=3)
    np.save(tmp_path / "f.npy", np.array([0.5, 1.0]))
    with pytest.raises(DataError, match="non-integer"):
        load_labels(tmp_path / "f.npy")


# --------------------------------------------------------------------------------------------
# Hugging Face folders


json_value = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=6)),
                          lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                          max_leaves=6)


def _hf(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    save_file({"quantize.embedding.weight": torch.ones(8, 4)}, str(folder / "model-1.safetensors"))
    save_file({"decoder.weight": torch.ones(4, 4)}, str(folder / "model-2.safetensors"))


@FUZZ
@given(config=st.one_of(st.binary(max_size=24), json_value.map(lambda v: json.dumps(v).encode())),
       weight_map=st.one_of(json_value, st.dictionaries(st.sampled_from(["quantize.embedding.weight", "decoder.weight"]),
                                                        st.one_of(json_value, st.sampled_from(["model-1.safetensors",
                                                                                               "model-2.safetensors"])))))
def test_hf_folders(tmp_path, config, weight_map):
    folder = tmp_path / "hf"
    _hf(folder)
    (folder / "config.json").write_bytes(config)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    before = _snapshot(folder)
    try:
        ckpt = load_checkpoint(folder)
        for key in ckpt.state:
            ckpt.state[key]
    except VqdoctorError as err:
        assert str(folder) in err.message
    assert _snapshot(folder) == before


@pytest.mark.parametrize(("config", "index", "message"), [
    (b"\xff{}", {"weight_map": {}}, "config file .* is not UTF-8"),
    (b"[1, 2]", {"weight_map": {}}, "holds a JSON list, not an object"),
    (b"{}", {"weight_map": {"quantize.embedding.weight": 5}}, "'quantize.embedding.weight' is 5, not a shard"),
    (b"{}", {"weight_map": [1]}, "'weight_map' is list, not an object"),
    (b"{}", [1], "shard index file .* holds a JSON list"),
])
def test_hf_folder_errors_name_the_value(tmp_path, config, index, message):
    folder = tmp_path / "hf"
    _hf(folder)
    (folder / "config.json").write_bytes(config)
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InputFileError, match=message):
        load_checkpoint(folder)
