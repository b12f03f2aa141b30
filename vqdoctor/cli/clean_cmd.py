"""`vqdoctor clean DIR`: remove the temporary outputs an interrupted write left (after a SIGKILL)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vqdoctor.cli.errors import translate_errors
from vqdoctor.errors import UsageError


@translate_errors
def clean_command(
    folder: Annotated[Path, typer.Argument(help="The folder an output was written to.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
) -> None:
    """Remove leftover temporary outputs (.vqdoctor-tmp-*) of interrupted vqdoctor writes in FOLDER.

    Only names starting with .vqdoctor-tmp- are touched; links are removed, never followed."""
    from vqdoctor.io.atomic import leftovers, remove_leftovers

    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder.", "Pass the folder the interrupted output was written to.")
    found = leftovers(folder) if dry_run else remove_leftovers(folder)
    verb = "would remove" if dry_run else "removed"
    for p in found:
        typer.echo(f"{verb} {p}")
    typer.echo(f"{len(found)} leftover(s) {verb} in {folder}." if found else f"No leftovers in {folder}.")
