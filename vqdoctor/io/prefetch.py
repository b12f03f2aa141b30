"""Read the next batch while the current one is encoded and assigned: a bounded background
reader. Reading (memory-mapped pages, image decoding, WAV parsing) releases the GIL for most of
its time, so it overlaps with torch's work on the batch before."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(batches: Iterator[T], *, depth: int = 2) -> Iterator[T]:
    """Yield the items of ``batches`` in order, reading up to ``depth`` ahead in a thread. An
    exception raised while reading is raised here, at the item where it happened; closing the
    generator early stops the reader."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def read() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, raised in its thread
            items.put((_DONE, exc))

    reader = threading.Thread(target=read, name="vqdoctor-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            item, exc = items.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while reader.is_alive():  # let a blocked put() see the stop flag
            try:
                items.get_nowait()
            except queue.Empty:
                reader.join(timeout=0.05)
