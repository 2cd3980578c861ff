"""The evaluation lease: who evaluates a run in `evaluating`, and until when.

The evaluation runs after the handler's transaction has committed (it takes seconds,
and SQLite has one write lock for every service), either from the handler's
after-commit action or from a reconcile tick finishing a run a crash left behind.
Both first claim the lease here, in a short ledger transaction that locks the run
(SELECT ... FOR UPDATE on PostgreSQL; SQLite takes its write lock at BEGIN), so they
never evaluate the same run at once. A lease outlives any sane evaluation; it only
expires when its holder died, and then the next reconcile tick takes the run over.

The lease lives in the run's `evaluation` JSON while the run is `evaluating` (no
extra table): {"status": "pending" | "running", "completion": {...}, "lease":
{"owner", "expires_at"}, "attempts": n, "last_error": "..."}.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from ctflow import states
from ctflow.ledger import runs
from ctflow.ledger.tables import Run

LEASE = timedelta(minutes=10)


@dataclass(frozen=True)
class EvaluationTask:
    """What an evaluation needs from the ledger, read while claiming the lease."""

    run_id: str
    pipeline: str
    owner: str
    attempt: int
    mlflow_run_id: str
    hyperparameters: dict[str, Any]
    dataset_version: str | None
    dataset: dict[str, Any]
    trigger: dict[str, Any]
    job: dict[str, Any]
    completion: dict[str, Any]  # what the trainer reported: artifact URIs, job id


def pending(completion: dict[str, Any]) -> dict[str, Any]:
    """The `evaluation` of a run that just entered `evaluating`."""
    return {"status": "pending", "completion": completion, "lease": None, "attempts": 0, "last_error": None}


def claim(tx: Session, run_id: str, now: datetime) -> EvaluationTask | None:
    """Take the lease on an `evaluating` run; None when it is not evaluating or someone holds it."""
    run = runs.get(tx, run_id, for_update=True)
    if run is None or run.state != states.EVALUATING:
        return None
    record = dict(run.evaluation or pending({}))
    lease = record.get("lease")
    if lease and datetime.fromisoformat(lease["expires_at"]) > now:
        return None
    owner = uuid.uuid4().hex
    record.update(
        status="running",
        lease={"owner": owner, "expires_at": (now + LEASE).isoformat()},
        attempts=int(record.get("attempts") or 0) + 1,
    )
    run.evaluation = record
    return EvaluationTask(
        run_id=run.id,
        pipeline=run.pipeline,
        owner=owner,
        attempt=record["attempts"],
        mlflow_run_id=run.mlflow_run_id or "",
        hyperparameters=dict(run.hyperparameters or {}),
        dataset_version=run.dataset_version,
        dataset=dict(run.dataset or {}),
        trigger=dict(run.trigger or {}),
        job=dict(run.job or {}),
        completion=dict(record.get("completion") or {}),
    )


def holder(tx: Session, task: EvaluationTask) -> Run | None:
    """The run, locked, if it is still evaluating under `task`'s lease (else someone took over)."""
    run = runs.get(tx, task.run_id, for_update=True)
    if run is None or run.state != states.EVALUATING:
        return None
    lease = (run.evaluation or {}).get("lease") or {}
    return run if lease.get("owner") == task.owner else None


def release(tx: Session, task: EvaluationTask, error: str) -> None:
    """Give the lease back after a transient failure, so the next reconcile tick retries at once."""
    run = holder(tx, task)
    if run is not None:
        run.evaluation = {**(run.evaluation or {}), "status": "pending", "lease": None, "last_error": error[:2000]}
