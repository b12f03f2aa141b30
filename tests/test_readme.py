"""README's commands and shown output stay true."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from vqdoctor.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    bash = _blocks("bash")
    install_and_run, install_and_test = bash[0].strip(), bash[1].strip()
    assert install_and_run.endswith("vqdoctor inspect")
    assert install_and_test.endswith("python -m pytest")
    assert install_and_test in (ROOT / ".ci" / "run").read_text()
    for cmd in (install_and_run, install_and_test):
        assert "-c constraints.txt" in cmd  # never an unpinned torch on the project's machines


def test_readme_output_is_what_inspect_prints():
    """The README shows the default report at 80 columns: its summary row, diagnosis, remedies and
    check lines are what `vqdoctor inspect` prints, and it fits the documented 40 lines."""
    shown = _blocks("text")[0]
    res = CliRunner().invoke(app, ["inspect"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    printed = [line.rstrip() for line in res.stdout.splitlines()]
    pinned = [line for line in shown.splitlines()
              if line.startswith(("quantizer", "FAIL", "WARN", "OK", "     remedy:", "       ", "next:", "Try next:"))]
    assert len(pinned) >= 15
    for line in pinned:
        assert line.rstrip() in printed, line
    assert len(shown.splitlines()) == len(printed) <= 40
