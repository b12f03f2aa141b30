"""`vqdoctor check` through Typer's runner. `vqdoctor.api.inspect` is replaced by a function that
returns a hand-built Report, so these tests pin the command (exit codes, config, baseline, JUnit,
JSON) without depending on the analysis engine."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test_check"))
from check_helpers import codebook, embeddings, healthy, report  # noqa: E402

import vqdoctor.api  # noqa: E402
import vqdoctor.cli.check_cmd  # noqa: E402,F401  (registers the command)
from vqdoctor.cli.app import app  # noqa: E402
from vqdoctor.errors import InputFileError  # noqa: E402
from vqdoctor.report.json_out import report_to_json, validate_report_dict  # noqa: E402

runner = CliRunner()


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Run in an empty folder; `fake.report = ...` sets what the analysis returns."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")

    class Fake:
        report = healthy()
        calls: list = []

    def inspect(checkpoint, *, data, analysis, progress=None):
        Fake.calls.append((checkpoint, data, analysis))
        if isinstance(Fake.report, Exception):
            raise Fake.report
        return Fake.report

    monkeypatch.setattr(vqdoctor.api, "inspect", inspect)
    return Fake


def check(*args: str):
    return runner.invoke(app, ["check", "model.safetensors", *args], env={"COLUMNS": "200"})


def test_exit_0_when_every_check_passes(fake):
    res = check()
    assert res.exit_code == 0, res.output
    assert "PASSED" in res.stdout and "utilization" in res.stdout and "merged_pairs" in res.stdout
    assert "defaults (fail bounds of docs/verdicts.md)" in res.stdout
    assert res.stderr == ""


def test_exit_1_when_a_check_fails_with_the_remedy(fake):
    fake.report = report(codebook(used=2), ec=embeddings())
    res = check()
    assert res.exit_code == 1, res.output
    assert "FAILED" in res.stdout and "12.5%" in res.stdout
    assert "vqdoctor fix revive model.safetensors --codebook quantize.embedding --out fixed.safetensors" in res.stdout


def test_remedy_repeats_the_data_options_in_check_and_junit(fake, tmp_path):
    import shlex

    fake.report = report(codebook(used=2), ec=embeddings())
    res = check("--latents", "my z.npy", "--labels", "y.npy", "--nesting", "ema", "--junit", "j.xml")
    assert res.exit_code == 1, res.output
    cmd = ("vqdoctor fix revive model.safetensors --codebook quantize.embedding --latents 'my z.npy' "
           "--labels y.npy --nesting ema --out fixed.safetensors")
    assert cmd in res.stdout
    failures = [f.text for f in ET.parse(tmp_path / "j.xml").getroot().iter("failure")]
    remedies = [t.split("remedy: ", 1)[1] for t in failures if "remedy: vqdoctor" in t]
    assert cmd in remedies and all(shlex.split(r)[:2] == ["vqdoctor", "fix"] for r in remedies)
    assert fake.calls[-1][1].nesting == "ema"  # --nesting reaches the analysis: EMA weights can be gated


def test_quiet_prints_nothing_and_keeps_the_exit_code(fake):
    fake.report = report(codebook(used=2), ec=embeddings())
    res = check("--quiet")
    assert res.exit_code == 1 and res.stdout == "", res.output
    fake.report = healthy()
    res = check("-q")
    assert res.exit_code == 0 and res.stdout == ""


def test_verbose_adds_the_full_report(fake):
    fake.report = report(codebook(used=2), ec=embeddings())
    res = check("--verbose")
    assert res.exit_code == 1, res.output
    assert "verdicts ─" in res.stdout and "FAILED" in res.stdout
    assert check("--verbose", "--quiet").exit_code == 2


def test_exit_2_on_input_error_without_traceback(fake):
    fake.report = InputFileError("model.safetensors is truncated", "re-download it")
    res = check()
    assert res.exit_code == 2
    assert "Error: model.safetensors is truncated. Re-download it." in res.stderr and "Traceback" not in res.output


@pytest.mark.parametrize(
    "args",
    [
        ["--min-utilization", "1.5"],
        ["--max-merged-pairs", "-1"],
        ["--latents", "z.npy", "--inputs", "x.npy", "--encoder", "e.pt"],
        ["--baseline", "missing.json"],
        ["--config", "missing.toml"],
        ["--device", "tpu"],
    ],
)
def test_exit_2_on_usage_errors(fake, args):
    res = check(*args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output


def test_unknown_config_keys_exit_2_listing_all(fake, tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.vqdoctor.check]\nmin_utilisation = 0.5\nmax_dead = 0.1\n")
    res = check()
    assert res.exit_code == 2
    err = " ".join(res.stderr.split())
    assert "max_dead, min_utilisation" in err and "min_utilization" in err and "max_regression" in err


def test_config_found_from_a_sub_directory_and_flags_win(fake, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.vqdoctor.check]\nmin_utilization = 0.9\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    (sub / "model.safetensors").write_bytes(b"")
    monkeypatch.chdir(sub)
    fake.report = report(codebook(used=14), ec=embeddings())  # utilization 87.5%
    res = check()
    assert res.exit_code == 1, res.output
    assert "pyproject.toml [tool.vqdoctor.check]" in res.stdout
    assert "dead_fraction" not in res.stdout  # only the configured threshold runs
    res = check("--min-utilization", "0.8")
    assert res.exit_code == 0, res.output
    assert "flags" in res.stdout


def test_explicit_config_file(fake, tmp_path):
    (tmp_path / "ci.toml").write_text("[check]\nmax_relative_mse = 0.05\n")
    res = check("--config", "ci.toml")
    assert res.exit_code == 1 and "relative_mse" in res.stdout


def test_strict_fails_skipped_checks(fake):
    fake.report = report(codebook(data=False, tv=None))
    res = check()
    assert res.exit_code == 0 and "skipped" in res.stdout and "--strict" in res.stdout
    res = check("--strict")
    assert res.exit_code == 1 and "not measured (--strict)" in res.stdout


def test_baseline_from_check_json_pass_and_regression(fake, tmp_path):
    res = check("--json", "base.json")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "base.json").read_text())
    assert doc["schema"] == "vqdoctor.check/1" and doc["passed"] is True
    validate_report_dict(doc["report"])

    assert check("--baseline", "base.json").exit_code == 0

    fake.report = report(codebook(used=14, tv=0.2), ec=embeddings(("blob", "spiral")))
    res = check("--baseline", "base.json", "--max-regression", "0.05")
    assert res.exit_code == 1, res.output
    out = " ".join(res.stdout.split())
    assert "utilization dropped from 100.0% (baseline) to 87.5%" in out
    assert "new merged pair(s) blob+spiral" in out
    assert check("--baseline", "base.json", "--max-regression", "5", "--max-merged-pairs", "3").exit_code == 1  # new pair


def test_baseline_from_inspect_json(fake, tmp_path):
    (tmp_path / "inspect.json").write_text(report_to_json(healthy()))
    fake.report = report(codebook(nppl=0.5), ec=embeddings())
    res = check("--baseline", "inspect.json")
    assert res.exit_code == 1 and "normalized_perplexity" in res.stdout


def test_bad_baseline_file_exit_2(fake, tmp_path):
    (tmp_path / "bad.json").write_text('{"schema": "something/else"}')
    res = check("--baseline", "bad.json")
    assert res.exit_code == 2 and "schema" in res.stderr


def test_junit_written_and_parsable(fake, tmp_path):
    fake.report = report(codebook("a", used=2), codebook("b"), ec=embeddings())
    (tmp_path / "out").mkdir()
    res = check("--junit", "out/junit.xml")
    assert res.exit_code == 1, res.output
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 11  # 5 checks x 2 codebooks + merged pairs
    assert suite.get("failures") == "2"  # a: utilization and dead_fraction
    assert {c.get("classname") for c in cases} == {"a", "b", "(model)"}


def test_json_to_stdout_is_only_json(fake):
    fake.report = report(codebook(used=2), ec=embeddings())
    res = check("--json", "-")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["schema"] == "vqdoctor.check/1" and doc["exit_code"] == 1
    assert any(r["outcome"] == "fail" and r["check"] == "utilization" for r in doc["results"])
    assert "FAILED" in res.stderr  # the table goes to stderr


def test_data_options_reach_the_analysis(fake, tmp_path):
    res = check("--latents", "z.npy", "--channel-axis", "1", "--codebook", "rvq.*", "--min-count", "3")
    assert res.exit_code == 0, res.output
    ckpt, data, analysis = fake.calls[-1]
    assert data.latents == Path("z.npy") and data.channel_axis == 1
    assert analysis.codebook == "rvq.*" and analysis.min_count == 3 and analysis.projection == "none"


def test_help_documents_exit_codes():
    res = runner.invoke(app, ["check", "--help"])
    assert res.exit_code == 0
    text = " ".join(res.stdout.split())
    assert "0 all checks passed" in text and "1 a check failed" in text and "2 usage or input error" in text


def test_the_github_actions_example_uses_real_flags():
    example = (Path(__file__).resolve().parents[2] / "docs" / "github-actions-example.yml").read_text()
    flags = {w for w in example.split() if w.startswith("--") and w not in ("--index-url",)}
    assert {"--baseline", "--junit", "--json", "--config", "--write-baseline"} <= flags
    res = runner.invoke(app, ["check", "--help"], env={"COLUMNS": "200"})
    for flag in flags:
        assert flag in res.stdout, flag


def test_end_to_end_on_the_shipped_samples(tmp_path, monkeypatch):
    """The real analysis: the healthy sample passes the default gate and becomes the baseline; the
    tokens-collapse sample fails its thresholds and regresses against that baseline."""
    from vqdoctor.samples import sample_path

    monkeypatch.chdir(tmp_path)
    env = {"COLUMNS": "200"}
    res = runner.invoke(app, ["check", str(sample_path("pretrained_healthy")), "--json", "base.json"], env=env)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["check", str(sample_path("vanilla_tokens_collapse")), "--baseline", "base.json",
                              "--junit", "junit.xml", "--max-merged-pairs", "0", "--max-allocation-tv", "0.3"], env=env)
    assert res.exit_code == 1, res.output
    out = " ".join(res.stdout.split())
    assert "allocation_tv" in out and "regression: utilization dropped from 100.0% (baseline)" in out
    cases = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite").findall("testcase")
    failed = {(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None}
    assert ("quantizer", "allocation_tv") in failed and ("quantizer", "utilization vs baseline") in failed
