"""Group commit: callers arriving while a batch is written share the next batch and its answer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ctflow.bus.coalescing import Coalescer


class HeldWriter:
    """Records each batch; the first one waits until the test lets it finish."""

    def __init__(self, fail_batch: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.first_started = threading.Event()
        self.release_first = threading.Event()
        self.fail_batch = fail_batch

    def __call__(self, items: list[int]) -> set[int]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.first_started.set()
            assert self.release_first.wait(10)
        if len(self.batches) == self.fail_batch:
            raise ConnectionError("ledger unreachable")
        return set(items)


def _queued(coalescer: Coalescer, count: int) -> None:
    """Wait until `count` items wait for the next batch (peeks at the open batch)."""
    deadline = time.monotonic() + 10
    while (coalescer._open is None or len(coalescer._open.items) < count) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert coalescer._open is not None and len(coalescer._open.items) == count


def _behind_a_held_write(coalescer: Coalescer, writer: HeldWriter, pool: ThreadPoolExecutor, callers: int):  # type: ignore[no-untyped-def]
    """Start one write and hold it; queue `callers` more behind it; release. (first, others) futures."""
    first = pool.submit(coalescer.submit, [0])
    assert writer.first_started.wait(10)
    others = [pool.submit(coalescer.submit, [n]) for n in range(1, callers + 1)]
    _queued(coalescer, callers)
    writer.release_first.set()
    return first, others


def test_a_lone_caller_writes_its_own_batch():
    """Without concurrency each call is a batch of one, answered at once."""
    writer = HeldWriter()
    writer.release_first.set()
    coalescer = Coalescer(writer)
    assert coalescer.submit([1, 2]) == {1, 2}
    assert coalescer.submit([3]) == {3}
    assert writer.batches == [[1, 2], [3]]


def test_callers_arriving_during_a_write_share_one_batch():
    """Five callers that queue behind an in-flight write are written together, once."""
    writer = HeldWriter()
    coalescer = Coalescer(writer)
    with ThreadPoolExecutor(6) as pool:
        first, others = _behind_a_held_write(coalescer, writer, pool, 5)
        assert first.result(10) == {0}
        answers = [f.result(10) for f in others]
    assert len(writer.batches) == 2 and writer.batches[0] == [0] and sorted(writer.batches[1]) == [1, 2, 3, 4, 5]
    assert all(answer == {1, 2, 3, 4, 5} for answer in answers)


def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_works():
    """The write's exception reaches every caller in that batch; nothing is left stuck."""
    writer = HeldWriter(fail_batch=2)
    coalescer = Coalescer(writer)
    with ThreadPoolExecutor(3) as pool:
        first, others = _behind_a_held_write(coalescer, writer, pool, 2)
        assert first.result(10) == {0}
        for future in others:
            with pytest.raises(ConnectionError):
                future.result(10)
    assert coalescer.submit([9]) == {9}
    assert len(writer.batches) == 3
