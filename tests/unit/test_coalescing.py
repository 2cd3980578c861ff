"""Group commit: callers arriving while a batch is written share the next batch; each gets its own answer."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ctflow.coalescing import Coalescer


class HeldWriter:
    """Records each batch and answers item * 10; the first batch waits until the test lets it finish (if `hold`)."""

    def __init__(self, fail_batch: int | None = None, hold: bool = True) -> None:
        self.batches: list[list[int]] = []
        self.hold = hold
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self.fail_batch = fail_batch
        self._lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self._lock:
            self.batches.append(list(items))
            number = len(self.batches)
        if number == 1 and self.hold:
            self.started.release()
            assert self.release.wait(10)
        if number == self.fail_batch:
            raise ConnectionError("ledger unreachable")
        return [item * 10 for item in items]


def _queued(coalescer: Coalescer, count: int) -> None:
    """Wait until `count` items wait for a writer (peeks at the queue)."""
    deadline = time.monotonic() + 10
    while len(coalescer._queue) < count and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(coalescer._queue) == count


def _behind_a_held_write(coalescer: Coalescer, writer: HeldWriter, pool: ThreadPoolExecutor, callers: int):  # type: ignore[no-untyped-def]
    """Start item 0's write and hold it; queue items 1..`callers` behind it, in order; release. (first, others)."""
    first = pool.submit(coalescer.submit, 0)
    assert writer.started.acquire(timeout=10)
    others = []
    for n in range(1, callers + 1):  # one at a time, so the queue holds them in this order
        others.append(pool.submit(coalescer.submit, n))
        _queued(coalescer, n)
    writer.release.set()
    return first, others


def test_a_lone_caller_writes_its_own_batch():
    """Without concurrency each call is a batch of one, answered at once."""
    writer = HeldWriter(hold=False)
    coalescer = Coalescer(writer)
    assert coalescer.submit(1) == 10
    assert coalescer.submit(3) == 30
    assert writer.batches == [[1], [3]]


def test_callers_arriving_during_a_write_share_one_batch_and_get_their_own_answers():
    """Five callers that queue behind an in-flight write are written together, once, in arrival order."""
    writer = HeldWriter()
    coalescer = Coalescer(writer)
    with ThreadPoolExecutor(6) as pool:
        first, others = _behind_a_held_write(coalescer, writer, pool, 5)
        assert first.result(10) == 0
        answers = [f.result(10) for f in others]
    assert writer.batches == [[0], [1, 2, 3, 4, 5]]
    assert answers == [10, 20, 30, 40, 50]


def test_batches_are_bounded_and_every_caller_is_answered():
    """Seven queued callers with batches of three: written as 3 + 3 + 1, each answered."""
    writer = HeldWriter()
    coalescer = Coalescer(writer, max_batch=3)
    with ThreadPoolExecutor(8) as pool:
        first, others = _behind_a_held_write(coalescer, writer, pool, 7)
        assert first.result(10) == 0
        assert [f.result(10) for f in others] == [n * 10 for n in range(1, 8)]
    assert writer.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]


def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_works():
    """The write's exception reaches every caller in that batch; nothing is left stuck."""
    writer = HeldWriter(fail_batch=2)
    coalescer = Coalescer(writer)
    with ThreadPoolExecutor(3) as pool:
        first, others = _behind_a_held_write(coalescer, writer, pool, 2)
        assert first.result(10) == 0
        for future in others:
            with pytest.raises(ConnectionError):
                future.result(10)
    assert coalescer.submit(9) == 90
    assert len(writer.batches) == 3


def test_batches_hold_at_least_one_item():
    with pytest.raises(ValueError):
        Coalescer(lambda items: items, max_batch=0)


def test_event_loop_callers_share_a_batch_without_holding_threads():
    """Coroutines queued behind a held write are written together and each awaits its own answer."""
    writer = HeldWriter()
    coalescer = Coalescer(writer)

    threads_before = threading.active_count()

    async def scenario() -> tuple[int, list[int]]:
        first = asyncio.ensure_future(coalescer.submit_async(0))
        await asyncio.to_thread(writer.started.acquire, True, 10)
        others = [asyncio.ensure_future(coalescer.submit_async(n)) for n in range(1, 5)]
        await asyncio.to_thread(_queued, coalescer, 4)
        # the writer and asyncio.to_thread's worker; the five waiting callers hold no thread
        assert threading.active_count() <= threads_before + 2
        writer.release.set()
        return await first, list(await asyncio.gather(*others))

    assert asyncio.run(scenario()) == (0, [10, 20, 30, 40])
    assert writer.batches == [[0], [1, 2, 3, 4]]


def test_an_event_loop_caller_gets_its_batch_failure():
    writer = HeldWriter(fail_batch=1, hold=False)
    coalescer = Coalescer(writer)
    with pytest.raises(ConnectionError):
        asyncio.run(coalescer.submit_async(1))
    assert asyncio.run(coalescer.submit_async(2)) == 20


def test_an_idle_writer_thread_stops_and_a_new_one_starts_when_items_arrive():
    writer = HeldWriter(hold=False)
    coalescer = Coalescer(writer, idle_seconds=0.05)
    assert coalescer.submit(1) == 10
    deadline = time.monotonic() + 10
    while coalescer._writing:  # peeks: whether the writer thread is alive
        assert time.monotonic() < deadline, "the writer thread never stopped"
        time.sleep(0.01)
    assert coalescer.submit(2) == 20
    assert writer.batches == [[1], [2]]


def _after_a_batch_of_three(coalescer: Coalescer, writer: HeldWriter, pool: ThreadPoolExecutor) -> None:
    """Write [0] (held) and then [1, 2, 3]: the last batch had three items."""
    first, others = _behind_a_held_write(coalescer, writer, pool, 3)
    assert first.result(10) == 0 and [f.result(10) for f in others] == [10, 20, 30]
    assert writer.batches == [[0], [1, 2, 3]]


def test_an_early_item_waits_briefly_for_the_rest_of_a_batch_as_large_as_the_last():
    """Steady load: after a batch of three, a lone early item is written with the two that follow it."""
    writer = HeldWriter()
    coalescer = Coalescer(writer, linger_seconds=10)
    with ThreadPoolExecutor(4) as pool:
        _after_a_batch_of_three(coalescer, writer, pool)
        early = pool.submit(coalescer.submit, 4)
        _queued(coalescer, 1)
        time.sleep(0.05)  # the writer is lingering, not writing
        assert writer.batches == [[0], [1, 2, 3]] and not early.done()
        rest = [pool.submit(coalescer.submit, n) for n in (5, 6)]
        assert early.result(10) == 40 and [f.result(10) for f in rest] == [50, 60]
    assert writer.batches == [[0], [1, 2, 3], [4, 5, 6]]


def test_lingering_is_bounded():
    """When the rest never come, the early item is written on its own after `linger_seconds`."""
    writer = HeldWriter()
    coalescer = Coalescer(writer, linger_seconds=0.2)
    with ThreadPoolExecutor(4) as pool:
        _after_a_batch_of_three(coalescer, writer, pool)
        started = time.monotonic()
        assert pool.submit(coalescer.submit, 4).result(10) == 40
        assert time.monotonic() - started >= 0.2
    assert writer.batches == [[0], [1, 2, 3], [4]]


def test_a_lone_caller_never_lingers():
    """After a batch of one, nobody is expected: the next item is written at once (the linger is 60 s)."""
    writer = HeldWriter(hold=False)
    coalescer = Coalescer(writer, linger_seconds=60)
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(coalescer.submit, 1).result(10) == 10
        assert pool.submit(coalescer.submit, 2).result(10) == 20
    assert writer.batches == [[1], [2]]
