"""The Typer application: each command is a plain function in its own module (``*_cmd.py``),
registered here. Nothing heavy is imported at start (torch, numpy, the API load inside the
commands), so ``vqdoctor --help`` / ``--version`` and shell completion answer at once."""

from __future__ import annotations

import typer

from vqdoctor import __version__
from vqdoctor.cli.check_cmd import check_command
from vqdoctor.cli.clean_cmd import clean_command
from vqdoctor.cli.fix_cmd import FIX_HELP, kmeans_command, revive_command, simvq_command
from vqdoctor.cli.inspect_cmd import inspect_command
from vqdoctor.cli.ls_cmd import ls_command
from vqdoctor.cli.merge_cmd import merge_command
from vqdoctor.cli.trend_cmd import trend_command

app = typer.Typer(
    name="vqdoctor",
    help="A doctor for vector-quantized models: find codebook collapse, tell which kind, repair it.",
    no_args_is_help=False,
    add_completion=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vqdoctor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """vqdoctor: diagnose and repair codebook collapse."""


app.command("check")(check_command)
app.command("clean")(clean_command)
app.command("inspect")(inspect_command)
app.command("ls")(ls_command)
app.command("merge")(merge_command)
app.command("trend")(trend_command)

fix_app = typer.Typer(help=FIX_HELP, no_args_is_help=True)
fix_app.command("kmeans")(kmeans_command)
fix_app.command("revive")(revive_command)
fix_app.command("simvq")(simvq_command)
app.add_typer(fix_app, name="fix")


def main() -> None:
    """The console entry point. Usage errors of the command line (an unknown option, a value out
    of range) come as one paragraph on stderr with click's exit code 2, not a framed box."""
    import sys

    from vqdoctor.cli.errors import format_error
    from vqdoctor.errors import UsageError

    try:
        rv = app(standalone_mode=False)
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as err:
        if not hasattr(err, "format_message"):
            raise
        ctx = getattr(err, "ctx", None)
        command = ctx.command_path if ctx is not None else "vqdoctor"
        print(format_error(UsageError(err.format_message(), hint=f"See '{command} --help'.")), file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
    sys.exit(rv if isinstance(rv, int) else 0)
