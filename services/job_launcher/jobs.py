"""The run's job record (`run.job`): what the ledger knows about a run's training job.

Shown as is by the status API. Keys: `backend`, `state` (`launching`, then the backend's
pending | running | succeeded | failed | cancelled), `job_id`, `output_uri`, `model_dir`,
`logs` (local jobs), `claimed_at`, `launched_at`, `ended_at`, `error`; and the launcher's
bookkeeping: `launch_attempts` (the launch lease, ctflow.ledger.leases, counts them), and
`completion` (the training.completed event seen or emitted for the job).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from ctflow import events, states
from ctflow.ledger.records import JobRecord
from ctflow.training import ENDED

if TYPE_CHECKING:
    from ctflow.ledger.tables import Run
    from ctflow.training import JobStatus, TrainingBackend

LAUNCHING = "launching"


def job_of(run: Run) -> JobRecord | dict[str, Any]:
    """The run's job record; empty before the run has claimed a training slot."""
    return run.job or {}


def update_job(run: Run, **changes: Any) -> None:
    """Merge `changes` (keys of JobRecord) into run.job; None removes a key.

    A new dict each time: SQLAlchemy notices a JSON column change only on assignment.
    """
    unknown = set(changes) - set(JobRecord.__annotations__)
    if unknown:
        raise KeyError(f"not keys of a job record: {sorted(unknown)}")
    merged = {**(run.job or {}), **changes}
    run.job = cast(JobRecord, {k: v for k, v in merged.items() if v is not None})


def ended(job: JobRecord | dict[str, Any]) -> bool:
    return job.get("state") in ENDED


def holds_slot(run: Run) -> bool:
    """A run occupies one of its pipeline's training slots until its job has ended."""
    return run.state == states.TRAINING and not ended(job_of(run))


def status_fields(status: JobStatus, backend: TrainingBackend) -> dict[str, Any]:
    """What a backend's JobStatus adds to the job record."""
    fields: dict[str, Any] = {
        "backend": backend.name,
        "job_id": status.job_id,
        "state": status.state,
        "output_uri": status.output_uri,
        "model_dir": status.model_dir,
        "error": status.error,
    }
    if status.logs:
        fields["logs"] = status.logs
    if status.ended:
        fields["ended_at"] = iso(datetime.fromtimestamp(status.ended_at, UTC)) if status.ended_at else now()
    return fields


def now() -> str:
    return events.now_iso()


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_since(stamp: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()
