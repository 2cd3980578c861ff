"""The trainer's JSON log lines, and how often an epoch gets one."""

from __future__ import annotations

import io
import json
import logging
import uuid

from ctflow_trainer.logs import EpochLines, JsonFormatter


def _logger(stream: io.StringIO) -> logging.Logger:
    """A logger of its own writing JSON lines to `stream` (the process's logging set-up stays as it was)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("run-1"))
    log = logging.getLogger(f"test-{uuid.uuid4().hex}")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_are_json_with_the_run_id_and_the_fields():
    stream = io.StringIO()
    log = _logger(stream)
    log.info("epoch %d", 3, extra={"fields": {"metrics": {"val_loss": 0.25}}})
    [line] = _lines(stream)
    assert (line["severity"], line["message"], line["run_id"], line["metrics"]) == ("INFO", "epoch 3", "run-1",
                                                                                    {"val_loss": 0.25})


def test_short_epochs_log_the_first_the_last_and_one_line_per_interval():
    """Epochs of 1 s with a 5 s interval: epochs 1, 6, 11 and the last (13) get a line."""
    stream, now = io.StringIO(), [0.0]
    lines = EpochLines(_logger(stream), interval=5.0, clock=lambda: now[0])
    for epoch in range(1, 14):
        lines(epoch, {"epoch": epoch}, last=epoch == 13)
        now[0] += 1.0
    assert [line["metrics"]["epoch"] for line in _lines(stream)] == [1, 6, 11, 13]


def test_epochs_longer_than_the_interval_each_get_a_line():
    stream, now = io.StringIO(), [0.0]
    lines = EpochLines(_logger(stream), interval=5.0, clock=lambda: now[0])
    for epoch in range(1, 5):
        lines(epoch, {"epoch": epoch}, last=False)
        now[0] += 6.0
    assert [line["metrics"]["epoch"] for line in _lines(stream)] == [1, 2, 3, 4]
