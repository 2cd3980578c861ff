"""JSON log lines on stderr, one object per line, as Cloud Logging reads them.

The services' format (ctflow.logs.CloudLoggingFormatter): `severity`, `message`, `time`,
`logger`, and on every line the job's `run_id` and its run's trace
(`logging.googleapis.com/trace`, from CTFLOW_TRACEPARENT), so a trainer's lines join
its run's trace. Fields passed as `extra={"fields": {...}}` are merged in. Libraries
that log (mlflow, urllib3, Python warnings) go through the same handler so stderr stays
parseable line by line.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import TextIO

from ctflow.events import trace_id_of
from ctflow.logs import CloudLoggingFormatter

LOGGER_NAME = "ctflow_trainer"
EPOCH_LINE_SECONDS = 5.0


def job_formatter(run_id: str | None, traceparent: str | None = None, project: str | None = None) -> logging.Formatter:
    """The formatter of a job's lines: the services' one, with the run and its trace on every line."""
    return CloudLoggingFormatter(project, context={"run_id": run_id or "", "trace_id": trace_id_of(traceparent) or ""})


class _JsonHandler(logging.StreamHandler):
    """Marker class, so configuring twice (tests run jobs in-process) replaces, not stacks."""


def configure_logging(
    run_id: str | None,
    stream: TextIO | None = None,
    *,
    traceparent: str | None = None,
    project: str | None = None,
) -> logging.Logger:
    """Send this package's INFO+ and everyone else's WARNING+ to stderr as JSON lines."""
    handler = _JsonHandler(stream or sys.stderr)
    handler.setFormatter(job_formatter(run_id, traceparent, project))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _JsonHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    return logger


class EpochLines:
    """An epoch's metrics as a log line: the first and last epoch, and others at most every `interval` s.

    Epochs of seconds or more each get their line. A job of many short epochs (a small
    model on a CPU) would otherwise spend a measurable share of its time on log lines,
    and flood the job's log; MLflow has every epoch's curves either way.
    """

    def __init__(
        self, log: logging.Logger, interval: float = EPOCH_LINE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.log, self.interval, self.clock = log, interval, clock
        self._last = -math.inf

    def __call__(self, epoch: int, metrics: dict[str, float], *, last: bool) -> None:
        now = self.clock()
        if epoch == 1 or last or now - self._last >= self.interval:
            self._last = now
            self.log.info("epoch %d", epoch, extra={"fields": {"metrics": metrics}})
