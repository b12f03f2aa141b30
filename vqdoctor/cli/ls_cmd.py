"""`vqdoctor ls`: what codebooks a checkpoint holds, where, and of which kind."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vqdoctor.cli.common import MetricOpt, NestingOpt, check_metric
from vqdoctor.cli.errors import translate_errors


@translate_errors
def ls_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or Hugging Face model folder.")],
    codebook: Annotated[Optional[str], typer.Option("--codebook", help="Glob over codebook names or keys; a glob naming a 2-D tensor takes it as the codebook.")] = None,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the vqdoctor.ls/1 JSON document to PATH ('-' for stdout).")] = None,
    allow_global: Annotated[Optional[list[str]], typer.Option("--allow-global", help="Trust this plain-data class when unpickling (e.g. argparse.Namespace). Repeatable.")] = None,
    metric: MetricOpt = "auto",
    nesting: NestingOpt = None,
) -> None:
    """List the codebooks found in a checkpoint: where, of which kind, how they are compared."""
    from rich.console import Console

    from vqdoctor import api
    from vqdoctor.cli.paths import check_outputs
    from vqdoctor.report.listing import render_ls, write_ls_json

    check_outputs(("--json", json_out))
    ckpt, found = api.list_codebooks(checkpoint, pattern=codebook, metric=check_metric(metric),
                                     allow_globals=tuple(allow_global or ()), nesting=nesting)
    if json_out is not None:
        write_ls_json(ckpt, found, json_out)
        if json_out == "-":
            return
    render_ls(ckpt, found, Console())
