"""The command line starts light: `import vqdoctor.cli.app` (what `vqdoctor --help`, `--version`
and shell completion run) loads no torch, numpy or API module; the commands import them when they run."""

import subprocess
import sys

from typer.testing import CliRunner

HEAVY = ("torch", "numpy", "scipy", "sklearn", "matplotlib", "safetensors", "vqdoctor.api", "vqdoctor.codebooks.registry")


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_importing_the_cli_loads_nothing_heavy():
    assert _loaded_after("import vqdoctor.cli.app") == []


def test_version_and_help_run_without_torch():
    code = ("import sys\nfrom vqdoctor.cli.app import app\n"
            "for args in (['--version'], ['--help'], ['inspect', '--help'], ['fix', 'kmeans', '--help']):\n"
            "    try:\n        app(args, standalone_mode=False)\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "False"


def test_lazy_package_exports_still_resolve():
    import vqdoctor
    import vqdoctor.codebooks as codebooks

    for name in codebooks.__all__:
        assert getattr(codebooks, name) is not None
    assert vqdoctor.Report.__name__ == "Report" and vqdoctor.DataOptions.__name__ == "DataOptions"


def test_version_flag():
    import vqdoctor
    from vqdoctor.cli.app import app

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"vqdoctor {vqdoctor.__version__}"
