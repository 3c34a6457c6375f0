"""The background batch producer: same items in the same order, errors surface, close stops it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tml.core.prefetch import Prefetcher


def test_items_come_out_in_order_and_the_end_is_sticky() -> None:
    prefetcher = Prefetcher(iter(range(100)), depth=3)
    assert list(prefetcher) == list(range(100))
    with pytest.raises(StopIteration):
        next(prefetcher)
    prefetcher.close()


def test_an_error_in_the_producer_is_raised_by_next_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad row 7 in part-00003.parquet")

    prefetcher = Prefetcher(source(), depth=2)
    assert next(prefetcher) == 1 and next(prefetcher) == 2
    with pytest.raises(ValueError, match="bad row 7"):
        next(prefetcher)
    prefetcher.close()


def test_the_producer_runs_ahead_by_at_most_depth_and_close_stops_it() -> None:
    produced = []

    def source() -> Iterator[int]:
        for item in range(1000):
            produced.append(item)
            yield item

    prefetcher = Prefetcher(source(), depth=4)
    assert next(prefetcher) == 0
    time.sleep(0.3)  # the producer fills the queue, then blocks
    assert len(produced) <= 1 + 4 + 1  # consumed + queued + one waiting to be put
    prefetcher.close()
    assert not any(t.name == "tml-prefetch" and t.is_alive() for t in threading.enumerate())
