"""The layers keep their direction: the core (and the pure check evaluator) import no I/O,
rendering or CLI modules, and never rich, typer or matplotlib (STYLE.md)."""

import subprocess
import sys
from pathlib import Path

import pytest

# every module of vqdoctor/core/ (a new one is checked without being listed)
CORE_MODULES = sorted(f"vqdoctor.core.{p.stem}" for p in (Path(__file__).resolve().parents[2] / "vqdoctor" / "core").glob("*.py")
                      if p.stem != "__init__")
CORE_FORBIDDEN = ("vqdoctor.io", "vqdoctor.report", "vqdoctor.cli", "rich", "typer", "matplotlib")
# check.py evaluates Report values (report.schema is its input type) but renders and reads nothing
CHECK_FORBIDDEN = ("vqdoctor.io", "vqdoctor.cli", "vqdoctor.report.json_out", "vqdoctor.report.terminal",
                   "rich", "typer", "matplotlib")


def _impure(module: str, forbidden: tuple[str, ...]) -> str:
    code = (
        f"import sys, {module}\n"
        f"bad = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {forbidden!r}))\n"
        "print(','.join(bad))"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_every_core_module_is_checked():
    assert len(CORE_MODULES) >= 16 and "vqdoctor.core.codebook" in CORE_MODULES and "vqdoctor.core.results" in CORE_MODULES


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_nothing_impure(module):
    assert _impure(module, CORE_FORBIDDEN) == "", module


def test_check_evaluator_is_pure():
    assert _impure("vqdoctor.check", CHECK_FORBIDDEN) == ""


# The renderers of the Report read only the Report: what a verdict needs to be shown (its unit, its
# remedy) travels with it, so report/ imports nothing above it (no verdicts, checks or commands).
RENDER_MODULES = ["vqdoctor.report.text", "vqdoctor.report.terminal", "vqdoctor.report.junit"]
RENDER_FORBIDDEN = ("vqdoctor.verdicts", "vqdoctor.check", "vqdoctor.api", "vqdoctor.diagnose", "vqdoctor.cli",
                    "vqdoctor.remedies", "typer")


@pytest.mark.parametrize("module", RENDER_MODULES)
def test_renderers_import_nothing_above_report(module):
    assert _impure(module, RENDER_FORBIDDEN) == "", module
