"""Nested class folders and manifests (CSV / JSONL of path,label) as --inputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_io.test_audio import _tone, _write
from vqdoctor.errors import DataError, InputFileError, UsageError
from vqdoctor.io.data import open_inputs


def _image(path, value: int, size=(4, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)


def _value(src, i: int) -> int:
    return round(float(src.take([i])[0, 0, 0, 0]) * 255)


def test_nested_class_folders_take_the_first_level_as_the_class(tmp_path):
    _image(tmp_path / "cat" / "indoor" / "b.png", 10)
    _image(tmp_path / "cat" / "a.png", 20)
    _image(tmp_path / "cat" / "outdoor" / "deep" / "c.png", 30)
    _image(tmp_path / "dog" / "x" / "d.png", 40)
    _image(tmp_path / "dog" / ".thumbs" / "hidden.png", 99)  # hidden folders and files are skipped
    _image(tmp_path / "dog" / ".e.png", 99)
    _image(tmp_path / ".cache" / "z.png", 99)
    src = open_inputs(tmp_path)
    assert src.label_names == ["cat", "dog"] and src.labels.tolist() == [0, 0, 0, 1]
    assert [_value(src, i) for i in range(4)] == [20, 10, 30, 40]  # sorted by path inside each class


def test_files_beside_class_folders_are_still_ambiguous(tmp_path):
    _image(tmp_path / "loose.png", 1)
    _image(tmp_path / "cat" / "deep" / "a.png", 2)
    with pytest.raises(DataError, match="both directly and in sub-folders"):
        open_inputs(tmp_path)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_links_to_folders_are_not_followed(tmp_path):
    _image(tmp_path / "outside" / "o.png", 5)
    _image(tmp_path / "data" / "cat" / "a.png", 6)
    os.symlink(tmp_path / "outside", tmp_path / "data" / "cat" / "more")
    os.symlink(tmp_path / "outside", tmp_path / "data" / "dog")
    src = open_inputs(tmp_path / "data")
    assert src.n == 1 and src.label_names == ["cat"]


def test_nested_audio_classes(tmp_path):
    _write(tmp_path / "speech" / "spk1" / "0.wav", _tone(300))
    _write(tmp_path / "music" / "0.wav", _tone(880))
    src = open_inputs(tmp_path)
    assert src.label_names == ["music", "speech"] and src.sample_shape == (1, 800)


def test_csv_manifest_with_labels_relative_to_its_folder(tmp_path):
    _image(tmp_path / "imgs" / "a.png", 10)
    _image(tmp_path / "imgs" / "sub" / "b.png", 20)
    _image(tmp_path / "c.png", 30)
    (tmp_path / "m.csv").write_text("path,label,note\nimgs/a.png,dog,x\n\nimgs/sub/b.png,cat,\"y, z\"\n./c.png,dog,\n")
    src = open_inputs(tmp_path / "m.csv")
    assert src.n == 3 and src.sample_shape == (1, 4, 4)
    assert src.label_names == ["cat", "dog"] and src.labels.tolist() == [1, 0, 1]
    assert [_value(src, i) for i in range(3)] == [10, 20, 30]  # the manifest's order


def test_jsonl_manifest_integer_labels_and_no_labels(tmp_path):
    for i in range(3):
        _image(tmp_path / f"{i}.png", 10 * i)
    lines = [json.dumps({"path": f"{i}.png", "label": 7 - i}) for i in range(3)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    src = open_inputs(tmp_path / "m.jsonl")
    assert src.labels.tolist() == [2, 1, 0] and src.label_names == ["5", "6", "7"]
    (tmp_path / "n.jsonl").write_text("\n".join(json.dumps({"path": f"{i}.png"}) for i in range(3)))
    assert open_inputs(tmp_path / "n.jsonl").labels is None
    np.save(tmp_path / "y.npy", np.array([0, 1, 0]))
    assert open_inputs(tmp_path / "n.jsonl", labels=tmp_path / "y.npy").labels.tolist() == [0, 1, 0]


def test_audio_manifest_with_resampling(tmp_path):
    _write(tmp_path / "a.wav", _tone(440), rate=16000)
    _write(tmp_path / "b.wav", _tone(440, rate=8000, n=400), rate=8000)
    (tmp_path / "m.csv").write_text("path\na.wav\nb.wav\n")
    with pytest.raises(DataError, match="2 sample rates"):
        open_inputs(tmp_path / "m.csv")
    src = open_inputs(tmp_path / "m.csv", sample_rate=16000)
    assert src.labels is None and src.sample_shape == (1, 800)
    x = src.take([0, 1])
    assert torch.allclose(x[0], x[1], atol=0.05)  # the same 440 Hz tone, once upsampled
    with pytest.raises(UsageError, match="--image-size applies to images"):
        open_inputs(tmp_path / "m.csv", image_size=8)


@pytest.mark.parametrize(("text", "error", "message"), [
    ("path,label\n../x.png,a\n", InputFileError, r"line 2: the path '\.\./x\.png' leaves the manifest's folder"),
    ("path\n/etc/passwd\n", InputFileError, r"line 2: the path '/etc/passwd' leaves"),
    ("path,label\na.png,cat\nmissing.png,dog\n", InputFileError, r"line 3: .*missing\.png does not exist"),
    ("file,label\na.png,cat\n", DataError, r"line 1: the header 'file,label' has no 'path' column"),
    ("path,label\na.png,cat\na.png\n", DataError, r"line 3: 1 field\(s\) but the header names 2"),
    ("path,label\na.png,cat\na.png,\n", DataError, r"line 3: 'a\.png' has no label but the first entry has one"),
    ("path\n", DataError, r"lists no files"),
    ("path\na.png\nsong.wav\n", DataError, r"entry 2 \(.*song\.wav\) is not an image file"),
    ("path\nnotes.txt\n", DataError, r"entry 1 .* is not an image or audio file"),
])
def test_bad_csv_manifests_name_the_line(tmp_path, text, error, message):
    _image(tmp_path / "a.png", 1)
    _write(tmp_path / "song.wav", _tone(440))
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "x.png").write_bytes((tmp_path / "a.png").read_bytes())
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(error, match=message) as err:
        open_inputs(tmp_path / "m.csv")
    assert str(tmp_path / "m.csv") in err.value.message


@pytest.mark.parametrize(("text", "message"), [
    ('{"path": "a.png"}\n{"path": 3}\n', r"line 2: expected an object with a string 'path'"),
    ('{"path": "a.png"}\n{oops\n', r"line 2: not JSON"),
    ('{"path": "a.png", "label": [1]}\n', r"line 1: the label \[1\] is neither"),
])
def test_bad_jsonl_manifests_name_the_line(tmp_path, text, message):
    _image(tmp_path / "a.png", 1)
    (tmp_path / "m.jsonl").write_text(text)
    with pytest.raises((DataError, InputFileError), match=message):
        open_inputs(tmp_path / "m.jsonl")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_a_manifest_entry_linking_out_is_refused(tmp_path):
    _image(tmp_path / "outside.png", 1)
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "outside.png", tmp_path / "d" / "in.png")
    (tmp_path / "d" / "m.csv").write_text("path\nin.png\n")
    with pytest.raises(InputFileError, match="line 2: the path 'in.png' leaves"):
        open_inputs(tmp_path / "d" / "m.csv")


def test_a_manifest_that_is_not_utf8_names_the_line(tmp_path):
    (tmp_path / "m.csv").write_bytes(b"path\n\xff.png\n")
    with pytest.raises(InputFileError, match=r"not UTF-8 text \(byte 5, line 2\)"):
        open_inputs(tmp_path / "m.csv")


def test_cli_reads_a_manifest(tmp_path):
    from typer.testing import CliRunner

    from vqdoctor.cli.app import app

    for i in range(6):
        _image(tmp_path / "imgs" / f"{i}.png", 40 * i)
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"imgs/{i}.png,{'ab'[i % 2]}\n" for i in range(6)))
    (tmp_path / "bad.csv").write_text("path\nimgs/0.png\n../up.png\n")
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(1, 16, kernel_size=2, stride=2)), str(tmp_path / "enc.pt"))
    np.save(tmp_path / "codes.npy", np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32))
    args = ["inspect", str(tmp_path / "codes.npy"), "--encoder", str(tmp_path / "enc.pt"), "--json", "-",
            "--projection", "none", "--inputs"]
    res = CliRunner().invoke(app, [*args, str(tmp_path / "m.csv")])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["data"]["vectors"] == 6 * 4 and doc["data"]["mode_source"] == "labels"
    res = CliRunner().invoke(app, [*args, str(tmp_path / "bad.csv")])
    flat = " ".join(res.output.split())
    assert res.exit_code == 2 and "line 3: the path '../up.png' leaves the manifest's folder" in flat
