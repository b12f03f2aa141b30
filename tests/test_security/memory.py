"""Peak Python-heap allocation of a block (tracemalloc), for the memory-bound tests."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def traced_peak() -> Iterator[list[int]]:
    """``with traced_peak() as peak:`` ... then ``peak[0]`` is the block's peak traced bytes."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
