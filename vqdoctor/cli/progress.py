"""Progress on stderr: one line naming the stage of the analysis (load, encode subsample, modes,
encode + assign, report, projection, k-means iteration) with, where the total is known, a bar,
done/total, percentage and ETA; where it is not (t-SNE and UMAP give no callbacks), a spinner and
the elapsed time, redrawn by rich's refresh thread while the stage runs. Silent when stderr is not
a terminal (pipes, CI logs): nothing is installed and the analysis runs as without progress.

The analysis announces its stages through :mod:`vqdoctor.stages`; :func:`stage_progress` listens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from vqdoctor import stages

if TYPE_CHECKING:
    from vqdoctor.core.kmeans import LloydProgress

REFRESH_PER_SECOND = 8


class _Count(ProgressColumn):
    """``done/total unit  pct%  ETA m:ss`` where the total is known, else ``done unit`` (or nothing)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        if task.total is None:
            return Text(f"{task.completed:,.0f} {unit}" if task.completed else "", style="progress.download")
        pct = 100.0 * task.completed / task.total if task.total else 100.0
        eta = task.time_remaining
        eta_text = "" if eta is None else f"  ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        return Text(f"{task.completed:,.0f}/{task.total:,.0f} {unit}  {pct:3.0f}%{eta_text}", style="progress.download")


class _Bar(BarColumn):
    """The bar only for stages with a total (a spinner already says "working")."""

    def render(self, task: Task):  # type: ignore[override]
        return Text("") if task.total is None else super().render(task)


class StageLine:
    """A :class:`vqdoctor.stages.StageListener` drawing the current stage on a rich Progress."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None
        self.name: str | None = None

    def stage(self, name: str, total: int | None = None) -> None:
        if self.task is not None and name == self.name:  # the same stage, its total now known
            self.bar.update(self.task, total=total)
        else:
            if self.task is not None:
                self.bar.remove_task(self.task)
            unit = "vectors" if "assign" in name else ""
            self.task, self.name = self.bar.add_task(name, total=total, unit=unit), name
        self.bar.refresh()

    def advance(self, n: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, n)

    def show(self, *, completed: int, description: str) -> None:
        """Set the current stage's count and text (k-means: iteration i, inertia)."""
        if self.task is not None:
            self.bar.update(self.task, completed=completed, description=description)
            self.bar.refresh()  # one line per iteration: iterations are slow enough for a redraw each

    def __call__(self, n: int) -> None:  # usable as a plain vector counter (api ``progress=``)
        self.advance(n)


@contextmanager
def stage_progress(console: Console, *, first: str = "load") -> Iterator[StageLine | None]:
    """Show the stages announced inside the block on ``console`` (stderr), starting with ``first``;
    yields None (and shows nothing) when ``console`` is not a terminal. A block inside another
    reuses the outer line."""
    outer = stages.current()
    if isinstance(outer, StageLine):
        yield outer
        return
    if not console.is_terminal:
        yield None
        return
    with Progress(
        SpinnerColumn(), TextColumn("[progress.description]{task.description}"), _Bar(bar_width=30), _Count(),
        TimeElapsedColumn(), console=console, transient=True, refresh_per_second=REFRESH_PER_SECOND,
    ) as bar:
        line = StageLine(bar)
        with stages.listening(line):
            line.stage(first)
            yield line


@contextmanager
def vector_progress(console: Console) -> Iterator[StageLine | None]:
    """:func:`stage_progress` under its earlier name (the analysis counts vectors through
    :func:`vqdoctor.stages.advance`; nothing needs to be passed as ``progress=``)."""
    with stage_progress(console) as line:
        yield line


@contextmanager
def lloyd_progress(console: Console) -> Iterator[LloydProgress | None]:
    """Per-iteration k-means progress (``k-means iteration i/n, inertia x``, bar, ETA) on the stage
    line; None when stderr is not a terminal (the caller may then take a path without callbacks)."""
    with stage_progress(console, first="k-means") as line:
        if line is None:
            yield None
            return

        def report(done: int, total: int, inertia: float) -> None:
            if done == 1:  # a new k-means (the next codebook or level)
                line.stage("k-means", total=total)
            line.show(completed=done, description=f"k-means iteration {done}/{total}, inertia {inertia:.6g}")

        yield report
