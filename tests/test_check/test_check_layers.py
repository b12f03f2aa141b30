"""`vqdoctor.check` is pure: importing it pulls in no I/O, rendering or CLI modules."""

import subprocess
import sys


def test_check_module_is_pure():
    code = (
        "import sys, vqdoctor.check\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'rich', 'typer', 'matplotlib'} "
        "or m.startswith(('vqdoctor.io', 'vqdoctor.cli', 'vqdoctor.report.json_out', 'vqdoctor.report.terminal')))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
