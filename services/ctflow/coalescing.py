"""Group commit: items that arrive while a batch is being written share the next batch.

Concurrent deliveries each need one short ledger transaction, and most of a short
transaction is BEGIN, COMMIT and the hand-over between threads, not the rows. So a
caller queues its item, a writer thread takes the queued items (up to `max_batch`,
oldest first) and writes them all in one call, and each caller gets the answer for
its own item. Nobody waits for more than the batches ahead of it. With no concurrency
every item is a batch of one.

Callers wait in a thread (`submit`) or on an asyncio event loop (`submit_async`): an
event-loop caller holds no thread while its item waits, and the hand-over back costs
one loop callback, not a thread switch per delivery.

One batch is written at a time, by one writer thread that starts when items arrive
and stops after `idle_seconds` with nothing to do.

Under steady load the callers a batch answers send their next items a moment later,
and one that arrived early would be written alone, paying for a whole transaction,
before the rest. So when fewer items wait than the last batch had, the writer waits
up to `linger_seconds` for as many (never when the last batch was a lone item: no one
waits on a caller that is alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    """One queued item, its answer, and how to tell its caller the answer is there."""

    __slots__ = ("item", "result", "error", "answered")

    def __init__(self, item: T, answered: Callable[[], object]) -> None:
        self.item = item
        self.result: tuple[R] | None = None  # (what the writer answered,) once it has
        self.error: BaseException | None = None
        self.answered = answered

    def outcome(self) -> R:
        if self.error is not None:
            raise self.error
        assert self.result is not None, "a slot is answered with a result or an error"
        return self.result[0]


class Coalescer(Generic[T, R]):
    """`submit(item)` returns what `write(batch)` answered for that item (`write` answers in batch order)."""

    def __init__(
        self,
        write: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 64,
        idle_seconds: float = 5.0,
        linger_seconds: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("a coalescer needs batches of at least one item")
        self._write = write
        self._max_batch = max_batch
        self._idle_seconds = idle_seconds
        self._linger_seconds = linger_seconds
        self._last_batch_size = 0
        self._turn = threading.Condition()
        self._queue: deque[_Slot[T, R]] = deque()
        self._writing = False  # the writer thread is alive

    def submit(self, item: T) -> R:
        """Queue `item` and block this thread until its batch is written."""
        done = threading.Event()
        slot: _Slot[T, R] = _Slot(item, done.set)
        self._enqueue(slot)
        done.wait()
        return slot.outcome()

    async def submit_async(self, item: T) -> R:
        """Queue `item` and wait on the running event loop until its batch is written."""
        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        slot: _Slot[T, R] = _Slot(item, lambda: loop.call_soon_threadsafe(_set_once, answered))
        self._enqueue(slot)
        await answered
        return slot.outcome()

    def _enqueue(self, slot: _Slot[T, R]) -> None:
        with self._turn:
            self._queue.append(slot)
            if self._writing:
                self._turn.notify()  # wakes the writer if it waits; a busy one finds the item next
            else:
                self._writing = True
                threading.Thread(target=self._write_while_queued, name="coalescer-writer", daemon=True).start()

    def _write_while_queued(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._write_batch(batch)

    def _next_batch(self) -> list[_Slot[T, R]] | None:
        """The oldest queued items, waiting for some up to `idle_seconds`; None ends the writer."""
        with self._turn:
            give_up = time.monotonic() + self._idle_seconds
            while not self._queue:
                left = give_up - time.monotonic()
                if left <= 0:
                    self._writing = False
                    return None
                self._turn.wait(left)
            self._linger()
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
            self._last_batch_size = len(batch)
            return batch

    def _linger(self) -> None:
        """Wait up to `linger_seconds` until as many items are queued as the last batch had.

        The caller holds `_turn`; waiting on it lets submitters queue meanwhile.
        """
        enough = min(self._last_batch_size, self._max_batch)
        until = time.monotonic() + self._linger_seconds
        while len(self._queue) < enough and (left := until - time.monotonic()) > 0:
            self._turn.wait(left)

    def _write_batch(self, batch: list[_Slot[T, R]]) -> None:
        try:
            results = self._write([slot.item for slot in batch])
            for slot, result in zip(batch, results, strict=True):
                slot.result = (result,)
        except BaseException as exc:  # noqa: BLE001 - handed to every caller in the batch
            for slot in batch:
                slot.error = exc
        for slot in batch:
            with contextlib.suppress(RuntimeError):  # its caller's event loop has closed: no one is waiting
                slot.answered()


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():  # a caller that was cancelled (client gone) has no one to tell
        future.set_result(None)
