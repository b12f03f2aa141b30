"""A progress bar on stderr that counts vectors; silent when stderr is not a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def vector_progress(console: Console) -> Iterator[Callable[[int], None]]:
    if not console.is_terminal:
        yield lambda n: None
        return
    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), TextColumn("{task.completed:,} vectors"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as bar:
        task = bar.add_task("assigning", total=None)
        yield lambda n: bar.advance(task, n)
