"""docs/ci.md and docs/github-actions-example.yml work from a clean checkout, in order: the doc's
step-by-step commands (in process, through Typer's runner) and every `run:` step of the workflow
(in bash, with `vqdoctor` running the copied sources and the `pip install` lines left out, since the
package is installed already) exit as the docs say."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vqdoctor.cli.app import app

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "docs" / "github-actions-example.yml"
CI_DOC = ROOT / "docs" / "ci.md"
PIP = re.compile(r"^\s*(python3? -m )?pip3? ")


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A fresh copy of the repository's tracked files (what actions/checkout gives a runner)."""
    try:
        listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no tracked files to copy")
    dest = tmp_path / "checkout"
    for name in filter(None, listed.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def doc_steps() -> list[tuple[str, str]]:
    """("toml", text) and ("run", command  # exits N) items of the doc's step-by-step section, in order."""
    text = CI_DOC.read_text(encoding="utf-8")
    section = text.split("## Set up, step by step", 1)[1].split("\n## ", 1)[0]
    items = []
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", re.sub(r"(?m)^ +", "", section), flags=re.S):
        if lang == "toml":
            items.append(("toml", body))
        elif lang == "console":
            items += [("run", line[2:]) for line in body.splitlines() if line.startswith("$ vqdoctor ")]
    return items


def test_the_step_by_step_of_docs_ci_md_works_in_order(checkout, monkeypatch):
    steps = doc_steps()
    assert [kind for kind, _ in steps] == ["run", "toml", "run", "run", "run"]
    monkeypatch.chdir(checkout)
    runner = CliRunner()
    for kind, body in steps:
        if kind == "toml":
            with open("pyproject.toml", "a", encoding="utf-8") as fh:
                fh.write("\n" + body)
            continue
        command, expected = body.rsplit("# exits ", 1)
        args = shlex.split(command)[1:]
        res = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert res.exit_code == int(expected), f"{command}\n{res.output}"
    assert json.loads(Path("ci/baseline.json").read_text())["schema"] == "vqdoctor.check/1"
    assert Path("reports/vqdoctor.xml").is_file() and Path("reports/vqdoctor.json").is_file()
    assert "regression: utilization dropped" in res.stdout  # the last step ran against the baseline


def workflow_steps() -> tuple[dict[str, str], list[dict]]:
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    (job,) = doc["jobs"].values()
    env = {k: str(v) for k, v in {**doc.get("env", {}), **job.get("env", {})}.items()}
    return env, [s for s in job["steps"] if "run" in s]


def run_workflow(checkout: Path, tmp: Path, env: dict[str, str], steps: list[dict]) -> list[tuple[str, int, str]]:
    """Run the steps in bash as GitHub does (`bash -e -o pipefail`), stopping at the first failure."""
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "vqdoctor"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m vqdoctor "$@"\n')
    shim.chmod(0o755)
    base = {**os.environ, **env, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(checkout), "COLUMNS": "200"}
    base.pop("VQDOCTOR_DEBUG", None)
    outcomes = []
    for step in steps:
        script = "\n".join(line for line in step["run"].splitlines() if not PIP.match(line))
        res = subprocess.run(["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script], cwd=checkout,
                             env={**base, **{k: str(v) for k, v in step.get("env", {}).items()}},
                             capture_output=True, text=True, timeout=600)
        outcomes.append((step.get("name", script), res.returncode, res.stdout + res.stderr))
        if res.returncode:
            break
    return outcomes


def test_every_run_step_of_the_workflow_passes_from_a_clean_checkout_and_gates(checkout, tmp_path):
    env, steps = workflow_steps()
    names = [s.get("name", "") for s in steps]
    assert any("Install" in n for n in names) and sum("vqdoctor check" in s["run"] for s in steps) == 2
    install = next(s["run"] for s in steps if "Install" in s.get("name", ""))
    assert "pip install -c constraints.txt ." in install and "pip install vqdoctor" not in install
    assert not (checkout / env["BASELINE"]).exists()  # a clean runner: no baseline committed yet

    outcomes = run_workflow(checkout, tmp_path, env, steps)
    assert [(name, rc) for name, rc, _ in outcomes] == [(n, 0) for n in names], outcomes
    said = "\n".join(out for _, _, out in outcomes)
    assert "Baseline written to" in said and "::notice::" in said
    assert (checkout / "reports/vqdoctor.xml").read_text().startswith("<?xml")
    check = json.loads((checkout / "reports/vqdoctor.json").read_text())
    assert check["passed"] and check["baseline"]["source"] == env["BASELINE"]
    assert (checkout / "reports/baseline.json").is_file()

    # the next push, with a collapsed checkpoint: the baseline is there now, the check step fails the job
    collapsed = {**env, "CHECKPOINT": "vqdoctor/samples/vanilla_tokens_collapse.safetensors"}
    outcomes = run_workflow(checkout, tmp_path, collapsed, [s for s in steps if "Install" not in s.get("name", "")])
    assert [rc for _, rc, _ in outcomes][-1] == 1 and outcomes[-1][0] == "Check the tokenizer", outcomes
    assert all(rc == 0 for _, rc, _ in outcomes[:-1])
    assert "Baseline written" not in "\n".join(out for _, _, out in outcomes)
    assert json.loads((checkout / "reports/vqdoctor.json").read_text())["passed"] is False
