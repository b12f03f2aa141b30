import threading
import time

import pytest

from vqdoctor.io.prefetch import prefetch


def test_items_arrive_in_order():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))


def test_a_reading_error_is_raised_at_its_item():
    def batches():
        yield 1
        yield 2
        raise ValueError("truncated file at batch 3")

    got = []
    with pytest.raises(ValueError, match="batch 3"):
        for item in prefetch(batches()):
            got.append(item)
    assert got == [1, 2]


def test_closing_early_stops_the_reader():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = prefetch(endless(), depth=2)
    assert next(it) == 0
    it.close()
    time.sleep(0.2)
    n = len(produced)
    time.sleep(0.2)
    assert len(produced) == n <= 5  # bounded read-ahead, then nothing more
    assert not any(t.name == "vqdoctor-prefetch" and t.is_alive() for t in threading.enumerate())
