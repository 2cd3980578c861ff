"""Group commit: callers that arrive while a batch is being written share the next batch.

Concurrent deliveries each need one short ledger transaction, and most of a short
transaction is BEGIN, COMMIT and the hand-over between threads, not the rows. So a
caller queues its item; whoever gets a writer's turn takes the queued items (up to
`max_batch`, oldest first) and writes them all in one call, and each caller gets the
answer for its own item. Nobody waits for more than the batches ahead of it. With no
concurrency every call is a batch of one, exactly as without coalescing.

`writers` bounds how many batches are written at once: one for SQLite (a single
writer anyway), a few for PostgreSQL, whose round trips then overlap.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("item", "taken", "done", "result", "error")

    def __init__(self, item: T) -> None:
        self.item = item
        self.taken = False  # a writer has it
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class Coalescer(Generic[T, R]):
    """`submit(item)` returns what `write(batch)` answered for that item (`write` answers in batch order)."""

    def __init__(self, write: Callable[[list[T]], Sequence[R]], *, writers: int = 1, max_batch: int = 64) -> None:
        if writers < 1 or max_batch < 1:
            raise ValueError("a coalescer needs at least one writer and batches of at least one item")
        self._write = write
        self._max_writers = writers
        self._max_batch = max_batch
        self._turn = threading.Condition()
        self._queue: deque[_Slot[T, R]] = deque()
        self._writers = 0

    def submit(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._turn:
            self._queue.append(slot)
        while True:
            with self._turn:
                while not slot.done and (slot.taken or self._writers >= self._max_writers):
                    self._turn.wait()
                if slot.done:
                    break
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
                for taken in batch:
                    taken.taken = True
                self._writers += 1
            self._write_batch(batch)  # may not hold this caller's item when the queue is long: loop
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _write_batch(self, batch: list[_Slot[T, R]]) -> None:
        try:
            results = self._write([slot.item for slot in batch])
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
        except BaseException as exc:  # noqa: BLE001 - handed to every caller in the batch
            for slot in batch:
                slot.error = exc
        finally:
            with self._turn:
                for slot in batch:
                    slot.done = True
                self._writers -= 1
                self._turn.notify_all()
