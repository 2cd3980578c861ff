"""Builds a service's heavy parts (ledger, handlers, adapters) off the start-up path.

Cloud Run counts cold start until the port answers; a service listens at once and
builds its dependencies in this warm-up, which starts with the process. Requests
that need them await it; a failed warm-up (say the database is unreachable) is
retried by the next request instead of leaving the instance broken.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


class Warmup(Generic[T]):
    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="warmup")
        self._future: Future[T] = self._pool.submit(build)

    def _current(self) -> Future[T]:
        with self._lock:
            if self._future.done() and self._future.exception() is not None:
                self._future = self._pool.submit(self._build)
            return self._future

    async def get(self) -> T:
        future = self._current()
        if future.done():  # warm: no need to wrap it for the event loop
            return future.result()
        return await asyncio.wrap_future(future)

    @property
    def ready(self) -> bool:
        return self._future.done() and self._future.exception() is None
