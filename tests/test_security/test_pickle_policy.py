"""Pickles never run code: every hostile opcode form is refused (legacy and zip files), with one
paragraph and exit 2, and no marker file is ever created; ``--allow-global`` takes only the
documented plain-data types, never imports anything else, and no message suggests an unsafe name."""

from __future__ import annotations

import argparse
import datetime
import decimal
import pathlib
import sys

import numpy as np
import pytest
import torch
from pickles import legacy_file, payloads, zip_file
from typer.testing import CliRunner

from vqdoctor.cli.app import app
from vqdoctor.errors import UnsafePickleError
from vqdoctor.io.safe_pickle import ALLOW_LIST, allowed_names, safe_torch_load

runner = CliRunner()

# Classes and functions that open files, run programs or import code (the probes and more).
PROBES = [
    "logging.FileHandler", "logging.handlers.RotatingFileHandler", "numpy.memmap", "numpy.load",
    "unittest.main.TestProgram", "tarfile.TarFile", "gzip.GzipFile", "zipfile.ZipFile", "socketserver.TCPServer",
    "http.server.HTTPServer", "pdb.Pdb", "code.InteractiveConsole", "os.system", "posix.system", "builtins.eval",
    "builtins.exec", "__builtin__.eval", "builtins.open", "builtins.getattr", "builtins.__import__",
    "subprocess.Popen", "functools.partial", "operator.attrgetter", "importlib.import_module",
    "runpy.run_path", "shutil.rmtree", "webbrowser.open", "tempfile.NamedTemporaryFile", "ctypes.CDLL",
    "pickle.loads", "sqlite3.connect", "torch.load", "numpy.ndarray.tofile", "pathlib.Path.write_text",
    "argparse.ArgumentParser", "collections.UserDict", "collections.defaultdict", "builtins.list", "fractions.Fraction", "antigravity.geohash",
    "os", "Namespace", "argparse.Namespace.__init__",
]


def _one_paragraph(res) -> str:
    text = res.output.strip()
    assert "Traceback" not in text and "\n\n" not in text, text
    return " ".join(text.split())


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "MARKER"
    yield m
    assert not m.exists(), "a pickle ran code"


@pytest.mark.parametrize("form", ["legacy", "zip"])
@pytest.mark.parametrize("name", list(payloads(pathlib.Path("x"))))
def test_hostile_pickle_is_refused_through_the_cli(tmp_path, marker, name, form):
    write = legacy_file if form == "legacy" else zip_file
    evil = write(tmp_path / f"evil.{form}.pt", payloads(marker)[name])
    before = evil.read_bytes()
    for args in (["inspect", str(evil)], ["ls", str(evil)], ["check", str(evil)],
                 ["inspect", str(evil), "--allow-global", "argparse.Namespace"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        text = _one_paragraph(res)
        assert "needs code to load" in text and "never runs code" in text
        assert "--allow-global" not in text.replace("--allow-global argparse.Namespace", "")
    assert evil.read_bytes() == before


@pytest.mark.parametrize("probe", PROBES)
def test_allow_global_refuses_every_name_off_the_list(tmp_path, marker, probe):
    evil = legacy_file(tmp_path / "evil.pt", payloads(marker)["logging.FileHandler"])
    res = runner.invoke(app, ["inspect", str(evil), "--allow-global", probe])
    assert res.exit_code == 2, res.output
    text = _one_paragraph(res)
    assert "not on vqdoctor's allow-list" in text and "state_dict" in text
    assert f"--allow-global {probe}" not in text.replace(f"--allow-global {probe!r}", "")
    with pytest.raises(UnsafePickleError, match="allow-list"):
        safe_torch_load(evil, allow_globals=[probe])


def test_a_refused_name_is_never_imported(tmp_path):
    evil = legacy_file(tmp_path / "evil.pt", payloads(tmp_path / "M")["pdb.Pdb"])
    for module in ("antigravity", "this"):
        sys.modules.pop(module, None)
        res = runner.invoke(app, ["inspect", str(evil), "--allow-global", f"{module}.anything"])
        assert res.exit_code == 2 and module not in sys.modules


@pytest.mark.parametrize("name", ["logging.FileHandler", "numpy.memmap", "unittest.main.TestProgram", "subprocess.Popen"])
@pytest.mark.parametrize("form", ["legacy", "zip"])
def test_naming_the_payloads_own_class_does_not_load_it(tmp_path, marker, name, form):
    write = legacy_file if form == "legacy" else zip_file
    evil = write(tmp_path / "evil.pt", payloads(marker)[name])
    res = runner.invoke(app, ["inspect", str(evil), "--allow-global", name])
    assert res.exit_code == 2 and "not on vqdoctor's allow-list" in _one_paragraph(res)


def test_refusal_of_an_unlisted_global_suggests_no_flag(tmp_path, marker):
    evil = zip_file(tmp_path / "evil.pt", payloads(marker)["unittest.main.TestProgram"])
    with pytest.raises(UnsafePickleError) as exc:
        safe_torch_load(evil)
    text = str(exc.value)
    assert "unittest.main.TestProgram" in exc.value.message and "not on vqdoctor's allow-list" in text
    assert "--allow-global" not in text and "safetensors.torch.save_file" in exc.value.hint


def test_listed_global_is_suggested_and_then_loads(tmp_path):
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hparams": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UnsafePickleError) as exc:
        safe_torch_load(path)
    assert "--allow-global argparse.Namespace" in exc.value.hint
    obj = safe_torch_load(path, allow_globals=["argparse.Namespace"])
    assert obj["hparams"].lr == 0.1 and torch.equal(obj["state_dict"]["w"], torch.ones(2))


@pytest.mark.parametrize("legacy", [False, True])
def test_every_listed_plain_type_loads(tmp_path, legacy):
    value = {
        "when": datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
        "day": datetime.date(2024, 5, 1), "at": datetime.time(3, 4), "lr": decimal.Decimal("0.001"),
        "dir": pathlib.PurePosixPath("/runs/a"), "win": pathlib.PureWindowsPath("C:/runs"),
        "np_scalar": np.float32(1.5),
        "np_array": np.arange(4, dtype=np.int16), "np_dtype": np.dtype("f8"), "rng": np.random.RandomState(0).get_state(),
        "args": argparse.Namespace(k=3), "size": torch.Size([2, 3]), "w": torch.arange(3.0),
    }
    if not legacy:
        value["posix"] = pathlib.PosixPath("/runs/b")
    path = tmp_path / "hp.pt"
    torch.save(value, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafePickleError):
        safe_torch_load(path)
    back = safe_torch_load(path, allow_globals=allowed_names())
    assert back["when"] == value["when"] and back["lr"] == value["lr"]
    assert back["np_array"].dtype == np.int16 and back["np_array"].tolist() == [0, 1, 2, 3]
    assert back["np_scalar"] == np.float32(1.5) and back["args"].k == 3 and back["dir"] == value["dir"]
    if not legacy:  # a concrete path comes back as text only: no file method to call
        assert type(back["posix"]) is pathlib.PurePosixPath and str(back["posix"]) == "/runs/b"


def test_allow_list_entries_are_documented():
    doc = (pathlib.Path(__file__).parents[2] / "docs" / "security.md").read_text(encoding="utf-8")
    for entry in ALLOW_LIST:
        assert f"`{entry.name}`" in doc, entry.name
