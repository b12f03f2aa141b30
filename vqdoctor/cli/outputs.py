"""Writing one Report to the outputs a command was asked for (shared by inspect and merge)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from vqdoctor.report.json_out import write_json
from vqdoctor.report.schema import Report
from vqdoctor.report.terminal import render_terminal


def write_outputs(report: Report, *, json_out: str | None, html: Path | None, plots: Path | None,
                  err: Console, verbose: bool = False, quiet: bool = False, dpi: int = 110) -> Console | None:
    """Write --json / --html / --plots (pictures at ``dpi``), then the terminal report to stdout (``verbose``: every
    detail) unless the JSON went there or ``quiet``. Returns the stdout console used (None when
    nothing was printed there)."""
    if json_out is not None:
        write_json(report, json_out)
    if html is not None:
        from vqdoctor.report.html import write_html

        write_html(report, html, dpi=dpi)
        err.print(f"HTML report written to {html}")
    if plots is not None:
        from vqdoctor.report.plots import save_plots

        written = save_plots(report, plots, dpi=dpi)
        err.print(f"{len(written)} plots written to {plots}/")
    if json_out == "-" or quiet:
        return None
    out = Console()
    render_terminal(report, out, verbose=verbose)
    return out
