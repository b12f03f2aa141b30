"""`vqdoctor check --write-baseline PATH`: the one-time baseline command of docs/ci.md works even
when the config already names the (not yet existing) baseline, writes atomically into folders it
creates, and keeps the thresholds' exit code. The analysis is a hand-built Report (as in test_check)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test_check"))
from check_helpers import codebook, embeddings, healthy, report  # noqa: E402

import vqdoctor.api  # noqa: E402
import vqdoctor.cli.check_cmd  # noqa: E402,F401  (registers the command)
from vqdoctor.cli.app import app  # noqa: E402
from vqdoctor.io.atomic import TMP_PREFIX  # noqa: E402
from vqdoctor.report.baseline import load_baseline  # noqa: E402

runner = CliRunner()


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")

    class Fake:
        report = healthy()

    monkeypatch.setattr(vqdoctor.api, "inspect", lambda checkpoint, *, data, analysis, progress=None: Fake.report)
    return Fake


def check(*args: str):
    return runner.invoke(app, ["check", "model.safetensors", *args], env={"COLUMNS": "200"})


def config_naming_a_missing_baseline(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text('[tool.vqdoctor.check]\nmin_utilization = 0.5\nbaseline = "ci/baseline.json"\n')
    return tmp_path / "ci" / "baseline.json"


def test_without_write_baseline_a_missing_configured_baseline_is_an_input_error(fake, tmp_path):
    config_naming_a_missing_baseline(tmp_path)
    res = check()
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "does not exist" in said and "--write-baseline" in said


def test_write_baseline_bootstraps_the_configured_baseline_then_check_compares_with_it(fake, tmp_path):
    target = config_naming_a_missing_baseline(tmp_path)
    res = check("--write-baseline", "ci/baseline.json")
    assert res.exit_code == 0, res.output
    assert "Baseline written to ci/baseline.json" in res.output and "vs baseline" not in res.stdout
    doc = json.loads(target.read_text())
    assert doc["schema"] == "vqdoctor.check/1" and doc["passed"] is True and doc["baseline"] is None
    assert load_baseline(target)["schema"] == "vqdoctor.report/1"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(TMP_PREFIX)]
    res = check()  # the next run reads it: every metric compared, nothing regressed
    assert res.exit_code == 0, res.output
    assert "utilization vs baseline" in res.stdout and "baseline: " in res.stdout
    fake.report = report(codebook(used=2), ec=embeddings())  # a collapsed checkpoint now regresses
    res = check()
    assert res.exit_code == 1 and "regression: utilization dropped" in res.stdout


def test_write_baseline_keeps_the_exit_code_of_the_thresholds_and_still_writes(fake, tmp_path):
    fake.report = report(codebook(used=2), ec=embeddings())
    res = check("--write-baseline", "new/deeper/base.json")
    assert res.exit_code == 1, res.output
    assert "do not accept it as is" in res.output
    assert json.loads((tmp_path / "new/deeper/base.json").read_text())["passed"] is False


def test_write_baseline_with_baseline_is_a_usage_error_before_the_analysis(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(vqdoctor.api, "inspect", lambda *a, **k: pytest.fail("analysis ran"))
    res = check("--baseline", "old.json", "--write-baseline", "new.json")
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "--write-baseline new.json" in said and "Drop one" in said


def test_write_baseline_in_an_unwritable_place_is_refused_before_the_analysis(fake, monkeypatch):
    monkeypatch.setattr(vqdoctor.api, "inspect", lambda *a, **k: pytest.fail("analysis ran"))
    res = check("--write-baseline", "/proc/nope/base.json")
    assert res.exit_code == 2 and "/proc/nope/base.json" in res.output
