"""Per-epoch curves to MLflow without slowing the loop: buffered, batched, asynchronous.

Each epoch's `train_loss`, `train_accuracy`, `val_loss` and `val_accuracy` (step = epoch)
are queued; the queue goes out in one `log_batch` at most every few seconds (and when
told), with `synchronous=False`, so the loop only hands it over and MLflow writes it on
its own thread. `wait` blocks until every write is stored. Epochs MLflow already has
(a restarted job re-reporting its history) are not sent twice.
"""

from __future__ import annotations

import time
from typing import Any

CURVES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


class CurveLog:
    def __init__(self, client: Any, *, min_flush_s: float = 5.0, budget: float = 0.02) -> None:
        # flush at most every `min_flush_s` seconds, rarer if a flush costs > `budget` of the time
        self.client = client
        self.run_id: str | None = None
        self.logged_through = 0  # highest epoch MLflow already has
        self._pending: list[Any] = []
        self._writes: list[Any] = []  # RunOperations of asynchronous log_batch calls
        self._min_flush, self._budget = min_flush_s, budget
        self._last_flush, self._flush_cost = time.perf_counter(), 0.0

    def attach(self, run_id: str, *, resumed: bool) -> None:
        """Log into `run_id`; for a reopened run, learn which epochs it already has."""
        self.run_id = run_id
        if resumed:
            history = self.client.get_metric_history(run_id, "val_loss")
            self.logged_through = max((m.step for m in history), default=0)

    def record(self, metrics: dict[str, float]) -> None:
        """Queue one epoch's curves; send the queue if it is due."""
        from mlflow.entities import Metric

        epoch = int(metrics["epoch"])
        if epoch > self.logged_through:
            stamp = int(time.time() * 1000)
            self._pending.extend(Metric(k, float(metrics[k]), stamp, epoch) for k in CURVES)
        due = max(self._min_flush, self._flush_cost / self._budget)
        if time.perf_counter() - self._last_flush >= due:
            self.flush()

    def flush(self) -> None:
        """Hand the queued metrics to MLflow's writer thread (see `wait`)."""
        if self._pending and self.run_id:
            started = time.perf_counter()
            batch, self._pending = self._pending, []
            write = self.client.log_batch(self.run_id, metrics=batch, synchronous=False)
            self._writes.append(write)
            self.logged_through = max(m.step for m in batch)
            self._flush_cost = time.perf_counter() - started
        self._last_flush = time.perf_counter()

    def wait(self) -> None:
        """Block until every asynchronous write is stored; raises if one failed."""
        writes, self._writes = self._writes, []
        for operation in writes:
            operation.wait()
