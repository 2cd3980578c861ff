"""Checkpoints in `AIP_CHECKPOINT_DIR`, so a job the platform restarts continues where it was.

Each checkpoint is one file `ckpt-<epoch>.pt` (torch.save of plain tensors and
numbers, loaded with `weights_only=True`) holding the trainer's full state, the MLflow
run id and the job's identity (run id, hyperparameters, manifest digest); the newest
two are kept. Writes are atomic, and a checkpoint that fails to load is skipped for
the one before it. A checkpoint is written after every epoch unless epochs are so
short that writing would cost more than `budget` (0.5%) of the training time (tiny
CPU runs: a ~2 ms write waits ~0.4 s); then every few epochs. The first and the last
epoch are always written.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import torch

from ctflow_trainer import uris
from ctflow_trainer.config import ConfigError
from ctflow_trainer.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
KEEP = 2


def checkpoint_name(epoch: int) -> str:
    return f"ckpt-{epoch:05d}.pt"


class Checkpointer:
    def __init__(self, dir_uri: str | None, identity: dict[str, Any], *, budget: float = 0.005) -> None:
        self.dir_uri, self.identity, self.budget = dir_uri, identity, budget
        self._known: dict[int, str] = {}
        self._last_cost: float | None = None
        self._last_end = 0.0

    def load_latest(self) -> dict[str, Any] | None:
        """The newest loadable checkpoint of this job or None; ConfigError if another job's."""
        if not self.dir_uri:
            return None
        for name in uris.list_names(self.dir_uri):
            if match := _NAME.match(name):
                self._known[int(match.group(1))] = name
        for epoch in sorted(self._known, reverse=True):
            uri = uris.join(self.dir_uri, self._known[epoch])
            try:
                data = io.BytesIO(uris.read_bytes(uri))
                # CPU first: a job restarted on another machine kind still loads it.
                state = torch.load(data, map_location="cpu", weights_only=True)
            except Exception as exc:  # a torn or foreign file: fall back to the previous one
                log.warning("skipping unreadable checkpoint %s: %s", uri, exc)
                continue
            mismatched = [k for k, v in self.identity.items() if state.get("identity", {}).get(k) != v]
            if mismatched:
                raise ConfigError(
                    f"AIP_CHECKPOINT_DIR {self.dir_uri} holds a checkpoint of another job "
                    f"(different {', '.join(mismatched)}); give each run its own checkpoint folder"
                )
            return state
        return None

    def maybe_save(
        self,
        epoch: int,
        trainer_state: Callable[[], dict[str, Any]],
        mlflow_run_id: str | None,
        *,
        force: bool = False,
    ) -> bool:
        """Checkpoint `epoch` unless it is too soon for the time budget; True if written.

        `trainer_state` is called only when a checkpoint is written (gathering it costs too).
        """
        if not self.dir_uri:
            return False
        started = time.perf_counter()
        if not force and self._last_cost is not None and started - self._last_end < self._last_cost / self.budget:
            return False
        buffer = io.BytesIO()
        torch.save(
            {
                "identity": self.identity,
                "mlflow_run_id": mlflow_run_id,
                "epoch": epoch,
                "trainer": trainer_state(),
            },
            buffer,
        )
        name = checkpoint_name(epoch)
        uris.write_bytes(uris.join(self.dir_uri, name), buffer.getvalue())
        self._known[epoch] = name
        for old in sorted(self._known)[:-KEEP]:
            uris.delete(uris.join(self.dir_uri, self._known.pop(old)))
        self._last_end = time.perf_counter()
        self._last_cost = self._last_end - started
        return True
