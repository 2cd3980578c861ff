"""The evaluation lease: who evaluates a run in `evaluating`, and until when.

The evaluation runs after the handler's transaction has committed (it takes seconds,
and SQLite has one write lock for every service), either from the handler's
after-commit action or from a reconcile tick finishing a run a crash left behind.
Both first claim the run's evaluation lease (ctflow.ledger.leases, named
`evaluate:<run id>`) in a short transaction that also locks the run, so they never
evaluate the same run at once. A lease outlives any sane evaluation; it only expires
when its holder died, and then the next reconcile tick takes the run over. The verdict
is written only by the lease's holder (`holder`), so a late one writes nothing.

The run's `evaluation` JSON shows the work while the run is `evaluating`:
{"status": "pending" | "running", "completion": {...}, "attempts": n, "last_error": "..."};
`attempts` is how many times the lease was claimed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from ctflow import states
from ctflow.ledger import leases, runs
from ctflow.ledger.records import DatasetRef, EvaluationRecord, JobRecord, TrainerReport, Trigger
from ctflow.ledger.tables import Run

LEASE = timedelta(minutes=10)


def lease_name(run_id: str) -> str:
    return f"evaluate:{run_id}"


@dataclass(frozen=True)
class EvaluationTask:
    """What an evaluation needs from the ledger, read while claiming the lease."""

    run_id: str
    pipeline: str
    lease: leases.Lease
    mlflow_run_id: str
    hyperparameters: dict[str, Any]
    dataset_version: str | None
    dataset: DatasetRef | None
    trigger: Trigger
    job: JobRecord | None
    completion: TrainerReport  # what the trainer reported: artifact URIs, job id


def pending(completion: TrainerReport) -> EvaluationRecord:
    """The `evaluation` of a run that just entered `evaluating`."""
    return {"status": "pending", "completion": completion, "attempts": 0, "last_error": None}


def claim(tx: Session, run_id: str, now: datetime) -> EvaluationTask | None:
    """Take the lease on an `evaluating` run; None when it is not evaluating or someone holds it."""
    run = runs.get(tx, run_id, for_update=True)
    if run is None or run.state != states.EVALUATING:
        return None
    lease = leases.claim(tx, lease_name(run_id), duration=LEASE, now=now)
    if lease is None:
        return None
    record = run.evaluation or pending({})
    run.evaluation = {**record, "status": "running", "attempts": lease.claims}
    return EvaluationTask(
        run_id=run.id,
        pipeline=run.pipeline,
        lease=lease,
        mlflow_run_id=run.mlflow_run_id or "",
        hyperparameters=dict(run.hyperparameters or {}),
        dataset_version=run.dataset_version,
        dataset=run.dataset,
        trigger=run.trigger,
        job=run.job,
        completion=record.get("completion") or {},
    )


def holder(tx: Session, task: EvaluationTask) -> Run | None:
    """The run, locked, if it is still evaluating under `task`'s lease (else someone took over)."""
    run = runs.get(tx, task.run_id, for_update=True)
    if run is None or run.state != states.EVALUATING or not leases.holds(tx, task.lease):
        return None
    return run


def done(tx: Session, task: EvaluationTask) -> None:
    """The verdict is recorded: the lease goes with it."""
    leases.forget(tx, task.lease.name)


def release(tx: Session, task: EvaluationTask, error: str) -> None:
    """Give the lease back after a transient failure, so the next reconcile tick retries at once."""
    run = holder(tx, task)
    if run is not None:
        leases.release(tx, task.lease)
        run.evaluation = {**(run.evaluation or pending({})), "status": "pending", "last_error": error[:2000]}
