"""Group commit: callers that arrive while a batch is being written share the next batch.

Concurrent requests each publish their few outbox rows right after commit. One ledger
transaction per request spends most of its time on BEGIN and COMMIT, not on the rows,
so requests that arrive while a batch is in flight queue their items, and the first of
them to get the turn writes them all in one call; the others wait for that call and
get its answer. Nobody waits for more than the batch ahead and its own. With no
concurrency every call is a batch of one, exactly as without coalescing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Batch(Generic[T, R]):
    def __init__(self) -> None:
        self.items: list[T] = []
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class Coalescer(Generic[T, R]):
    """`submit(items)` runs `write(all items of this batch)` once per batch and returns its result."""

    def __init__(self, write: Callable[[list[T]], R]) -> None:
        self._write = write
        self._turn = threading.Condition()
        self._open: _Batch[T, R] | None = None  # the batch taking items while another is written
        self._writing = False

    def submit(self, items: Sequence[T]) -> R:
        with self._turn:
            batch = self._open or _Batch()
            self._open = batch
            batch.items.extend(items)
            while self._writing and not batch.done:
                self._turn.wait()
            if not batch.done:  # nothing in flight: this caller writes the batch, closing it
                self._writing, self._open = True, None
        if not batch.done:
            try:
                batch.result = self._write(batch.items)
            except BaseException as exc:
                batch.error = exc
            finally:
                with self._turn:
                    batch.done, self._writing = True, False
                    self._turn.notify_all()
        if batch.error is not None:
            raise batch.error
        return batch.result  # type: ignore[return-value]
