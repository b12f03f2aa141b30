"""Where a long run is: the analysis names its stages (load, modes, encode + assign, projection,
k-means iteration) and counts its work; whoever listens shows it. With no listener (library use,
tests, pipes: the CLI listens only when stderr is a terminal) each call is one lookup.

A listener is installed for a block with :func:`listening`; it lives in a context variable, so
threads and nested runs keep their own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol


class StageListener(Protocol):
    def stage(self, name: str, total: int | None = None) -> None:
        """A new stage begins; ``total``: the units of work it will count, where known."""

    def advance(self, n: int) -> None:
        """``n`` more units of the current stage are done."""


_listener: ContextVar[StageListener | None] = ContextVar("vqdoctor_stage_listener", default=None)


def stage(name: str, total: int | None = None) -> None:
    """Announce that stage ``name`` begins (``total`` units, where known)."""
    listener = _listener.get()
    if listener is not None:
        listener.stage(name, total)


def advance(n: int) -> None:
    """Count ``n`` units of work of the current stage."""
    listener = _listener.get()
    if listener is not None:
        listener.advance(n)


def current() -> StageListener | None:
    """The listener of this context, if any."""
    return _listener.get()


@contextmanager
def listening(listener: StageListener) -> Iterator[StageListener]:
    """Send the stages announced inside the block to ``listener``."""
    token = _listener.set(listener)
    try:
        yield listener
    finally:
        _listener.reset(token)
