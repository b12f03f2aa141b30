"""Exit codes a CI job can rely on: `check` exits 1 only for failed thresholds and 2 for any
input, usage or internal error (a crash is one paragraph, never exit 1); command-line range
errors are one paragraph; a config key of the wrong type is an error naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from stats_helpers import make_setup
from typer.testing import CliRunner

from vqdoctor import api
from vqdoctor.cli.app import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def _text(res) -> str:
    return " ".join(res.output.split())


def test_check_thresholds_fail_with_1_and_pass_with_0(tmp_path):
    ckpt, z, _ = make_setup(tmp_path)
    res = runner.invoke(app, ["check", str(ckpt), "--latents", str(z), "--min-utilization", "1.0"])
    assert res.exit_code == 1, res.output
    res = runner.invoke(app, ["check", str(ckpt), "--latents", str(z), "--min-utilization", "0.0"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("args", [["{missing}"], ["{ckpt}", "--latents", "{missing}"], ["{ckpt}", "--device", "tpu"],
                                  ["{ckpt}", "--shard", "0/2"]])
def test_check_input_errors_exit_2(tmp_path, args):
    ckpt, _, _ = make_setup(tmp_path)
    args = [a.format(ckpt=ckpt, missing=tmp_path / "nope.npy") for a in args]
    res = runner.invoke(app, ["check", *args])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_check_crash_is_one_paragraph_and_exit_2(tmp_path, monkeypatch):
    ckpt, z, _ = make_setup(tmp_path)

    def crash(*a, **k):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(api, "inspect", crash)
    res = runner.invoke(app, ["check", str(ckpt), "--latents", str(z)])
    assert res.exit_code == 2, res.output
    text = _text(res)
    assert "Internal error in vqdoctor check" in text and "ZeroDivisionError" in text and "VQDOCTOR_DEBUG=1" in text
    assert "Traceback" not in res.output
    monkeypatch.setenv("VQDOCTOR_DEBUG", "1")
    res = runner.invoke(app, ["check", str(ckpt), "--latents", str(z)])
    assert isinstance(res.exception, ZeroDivisionError)  # the debug switch shows the real traceback


@pytest.mark.parametrize("args", [["inspect", "x.pt", "--min-count", "0"], ["check", "x.pt", "--min-utilization", "2"],
                                  ["inspect", "x.pt", "--bogus"]])
def test_command_line_errors_are_one_paragraph(tmp_path, args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "vqdoctor", *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("Error: ") and "\n\n" not in err and "╭" not in err and "Traceback" not in err, err
    assert args[2] in err


@pytest.mark.parametrize(("toml", "key"), [("[tool.vqdoctor]\ncheck = 5\n", "check = 5"),
                                           ("[tool]\nvqdoctor = 'x'\n", "vqdoctor = 'x'")])
def test_config_table_of_the_wrong_type_names_the_key(tmp_path, monkeypatch, toml, key):
    ckpt, z, _ = make_setup(tmp_path)
    (tmp_path / "pyproject.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["check", str(ckpt), "--latents", str(z)])
    assert res.exit_code == 2, res.output
    assert key in _text(res) and "must be a table" in _text(res)
    cfg = tmp_path / "gate.toml"
    cfg.write_text("check = 5\n")
    res = runner.invoke(app, ["check", str(ckpt), "--latents", str(z), "--config", str(cfg)])
    assert res.exit_code == 2 and "check = 5" in _text(res)
