"""The core stays pure: importing it pulls in no I/O, rendering or CLI modules."""

import subprocess
import sys

import pytest

CORE_MODULES = [
    "vqdoctor.core.assign", "vqdoctor.core.usage", "vqdoctor.core.ema", "vqdoctor.core.geometry",
    "vqdoctor.core.chain", "vqdoctor.core.modes", "vqdoctor.core.collapse", "vqdoctor.core.projection",
    "vqdoctor.core.subsample", "vqdoctor.core.kmeans",
]
FORBIDDEN = ("vqdoctor.io", "vqdoctor.report", "vqdoctor.cli", "rich", "typer", "matplotlib")


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_nothing_impure(module):
    code = (
        f"import sys, {module}\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {{'rich','typer','matplotlib'}} "
        f"or any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r}))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"
