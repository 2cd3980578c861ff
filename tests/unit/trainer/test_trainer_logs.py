"""The trainer's JSON log lines, and how often an epoch gets one."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from ctflow_trainer.logs import EpochLines, job_formatter
from tests.support import REPO_ROOT


def _logger(stream: io.StringIO) -> logging.Logger:
    """A logger of its own writing JSON lines to `stream` (the process's logging set-up stays as it was)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(job_formatter("run-1", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "proj"))
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
    assert (line["severity"], line["message"], line["run_id"], line["metrics"]) == (
        "INFO",
        "epoch 3",
        "run-1",
        {"val_loss": 0.25},
    )
    # The run's trace, as the services' lines of the same run carry it (the trainer's own formatter dropped it).
    assert line["logging.googleapis.com/trace"] == "projects/proj/traces/0af7651916cd43dd8448eb211c80319c"


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


TRACKER_SCRIPT = textwrap.dedent("""
    import json, logging, sys
    from pathlib import Path
    from ctflow_trainer.config import JobConfig
    from ctflow_trainer.logs import configure_logging
    from ctflow_trainer.tracking import Tracker

    configure_logging("digits-1")
    home = Path(sys.argv[1])
    Tracker(JobConfig.from_env({"CTFLOW_RUN_ID": "digits-1", "CTFLOW_PIPELINE": "digits",
                                "CTFLOW_DATASET_URI": str(home / "data"), "CTFLOW_HYPERPARAMETERS": "{}",
                                "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}))
    for name in ("mlflow.store", "alembic.runtime.migration", "sqlalchemy.engine.Engine"):
        logging.getLogger(name).warning("a warning from %s", name)
    logging.getLogger("mlflow.store").info("an INFO line MLflow would print")
""")


def test_mlflow_alembic_and_sqlalchemy_lines_come_out_as_the_jobs_json_at_warning_and_above(tmp_path: Path):
    """`import mlflow` gives these loggers plain-text handlers at INFO; the job's stderr stays JSON."""
    done = subprocess.run(
        [sys.executable, "-c", TRACKER_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PYTHONPATH": f"{REPO_ROOT / 'trainer_image'}:{REPO_ROOT / 'services'}",
        },
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # fails on any plain-text line
    assert [line["message"] for line in lines] == [
        f"a warning from {name}" for name in ("mlflow.store", "alembic.runtime.migration", "sqlalchemy.engine.Engine")
    ]
