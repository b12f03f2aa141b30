"""Output locations are validated and their folders created when a command starts, before any
analysis (cli/paths.py): `--json nodir/r.json` creates `nodir/`, an unwritable place is refused in
well under a second with the path named, and nothing is created when one flag is refused."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

import vqdoctor.api
from vqdoctor.cli.app import app
from vqdoctor.samples import sample_path

runner = CliRunner()
HEALTHY = str(sample_path("pretrained_healthy"))


def run(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture
def no_analysis(monkeypatch):
    """Any analysis or checkpoint load fails the test: the command must stop before it."""
    for name in ("inspect", "load", "gather_statistics", "fix_checkpoint"):
        monkeypatch.setattr(vqdoctor.api, name, lambda *a, **k: pytest.fail("the analysis started"))


def test_inspect_outputs_into_missing_folders_are_created(tmp_path):
    res = run("inspect", HEALTHY, "--projection", "none", "--json", str(tmp_path / "nodir/r.json"),
              "--html", str(tmp_path / "html/deep/r.html"), "--plots", str(tmp_path / "plots/here"))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "nodir/r.json").read_text())["schema"] == "vqdoctor.report/1"
    assert (tmp_path / "html/deep/r.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert list((tmp_path / "plots/here").glob("*.png"))


def test_check_junit_and_json_into_a_missing_reports_folder(tmp_path):
    res = run("check", HEALTHY, "--junit", str(tmp_path / "reports/vqdoctor.xml"),
              "--json", str(tmp_path / "reports/vqdoctor.json"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "reports/vqdoctor.xml").read_text().startswith("<?xml")
    assert json.loads((tmp_path / "reports/vqdoctor.json").read_text())["schema"] == "vqdoctor.check/1"


def test_ls_json_into_a_missing_folder(tmp_path):
    res = run("ls", HEALTHY, "--json", str(tmp_path / "a/b/ls.json"))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "a/b/ls.json").read_text())["schema"].startswith("vqdoctor.ls/")


@pytest.mark.parametrize("args", [
    ["inspect", HEALTHY, "--json", "/proc/x/r.json"],
    ["inspect", HEALTHY, "--html", "/proc/x/r.html"],
    ["inspect", HEALTHY, "--plots", "/proc/x/plots"],
    ["inspect", HEALTHY, "--save-stats", "/proc/x/s.npz"],
    ["check", HEALTHY, "--junit", "/proc/x/r.xml"],
    ["check", HEALTHY, "--json", "/proc/x/r.json"],
    ["check", HEALTHY, "--write-baseline", "/proc/x/b.json"],
    ["ls", HEALTHY, "--json", "/proc/x/ls.json"],
    ["fix", "revive", HEALTHY, "--out", "/proc/x/fixed.safetensors"],
], ids=lambda a: f"{a[0]} {a[-2]}")
def test_an_unwritable_location_is_refused_up_front_with_the_path_named(args, no_analysis):
    t0 = time.perf_counter()
    res = run(*args)
    took = time.perf_counter() - t0
    assert res.exit_code == 2, res.output
    assert args[-1] in " ".join(res.output.split()) and "Traceback" not in res.output
    assert took < 1.0, f"{took:.2f} s"


def test_a_file_in_the_way_of_the_folder_is_named(tmp_path, no_analysis):
    (tmp_path / "afile").write_text("")
    res = run("inspect", HEALTHY, "--json", str(tmp_path / "afile/r.json"))
    assert res.exit_code == 2 and "is not a folder" in res.output


def test_nothing_is_created_when_one_output_is_refused(tmp_path, no_analysis):
    res = run("inspect", HEALTHY, "--json", str(tmp_path / "made/r.json"), "--html", "/proc/x/r.html")
    assert res.exit_code == 2
    assert not (tmp_path / "made").exists()
