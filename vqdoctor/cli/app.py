"""The Typer application. Each command lives in its own module and registers itself here."""

from __future__ import annotations

import typer

from vqdoctor import __version__

app = typer.Typer(
    name="vqdoctor",
    help="A doctor for vector-quantized models: find codebook collapse, tell which kind, repair it.",
    no_args_is_help=False,
    add_completion=False,
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


def _register() -> None:
    from vqdoctor.cli import check_cmd, clean_cmd, fix_cmd, inspect_cmd, ls_cmd, merge_cmd, trend_cmd  # noqa: F401  (registration by import)


_register()


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
