"""Per-pipeline training slots: a run claims one, waits in the queue, or gives way to a newer dataset.

A run holds a slot while it is `training` and its job has not ended, so a finished job
frees its slot before the completion-handler has moved the run on. Waiting dataset
arrivals coalesce: only the newest waits, older ones become `superseded`; hyperparameter
requests each wait their turn. Every decision about a pipeline's slots takes the
pipeline's lock first, so two deliveries can never both take the last slot: on
PostgreSQL a transaction-scoped advisory lock, on SQLite the database's single writer
lock that BEGIN IMMEDIATE takes for every ledger transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ctflow import states
from ctflow.contracts import PipelineSpec
from ctflow.handling import HandlerContext
from ctflow.ledger import locks, runs
from ctflow.ledger.tables import Run
from ctflow.topology import JOB_LAUNCHER

from . import jobs


def lock_pipeline(tx: Session, pipeline: str) -> None:
    """Hold the pipeline's slot lock until this transaction ends."""
    locks.hold(tx, f"ctflow-slots:{pipeline}")


def admit(ctx: HandlerContext, run: Run, spec: PipelineSpec, detail: dict[str, Any]) -> str:
    """Claim a slot for a `requested` run, or queue it; returns the run's new state."""
    cap, busy = spec.training.max_concurrent_runs, busy_slots(ctx.tx, spec.name)
    if busy < cap:
        claim(ctx, run, {**detail, "slot": f"{busy + 1} of {cap}"})
        return run.state
    detail = {**detail, "busy_slots": f"{busy} of {cap}"}
    if run.trigger.get("kind") == "dataset":
        _coalesce(ctx, run, detail)
    else:
        runs.transition(ctx.tx, run, states.QUEUED, JOB_LAUNCHER, detail=detail)
    return run.state


def start_waiting(ctx: HandlerContext, spec: PipelineSpec) -> list[str]:
    """Claim free slots for the pipeline's oldest queued runs; returns the runs claimed."""
    lock_pipeline(ctx.tx, spec.name)
    cap, busy = spec.training.max_concurrent_runs, busy_slots(ctx.tx, spec.name)
    claimed = []
    for run in _queued(ctx.tx, spec.name, limit=max(cap - busy, 0)):
        busy += 1
        claim(ctx, run, {"slot": f"{busy} of {cap}"})
        claimed.append(run.id)
    return claimed


def claim(ctx: HandlerContext, run: Run, detail: dict[str, Any]) -> None:
    """The run trains: its job is `launching` until the launch (after commit) records it."""
    runs.transition(ctx.tx, run, states.TRAINING, JOB_LAUNCHER, detail=detail)
    jobs.update_job(run, state=jobs.LAUNCHING, claimed_at=jobs.now())
    ctx.touched(run.id)


def busy_slots(tx: Session, pipeline: str) -> int:
    return sum(1 for run in runs.of_pipeline(tx, pipeline, states.TRAINING) if jobs.holds_slot(run))


def _queued(tx: Session, pipeline: str, limit: int | None = None) -> list[Run]:
    return runs.of_pipeline(tx, pipeline, states.QUEUED, oldest_first=True, limit=limit, for_update=True)


def _coalesce(ctx: HandlerContext, run: Run, detail: dict[str, Any]) -> None:
    """Of the waiting dataset runs and this one, the newest waits and every other one is superseded.

    Usually this run is the newest; when deliveries came out of order, it gives way at once.
    """
    waiting = [r for r in _queued(ctx.tx, run.pipeline) if r.trigger.get("kind") == "dataset"]
    newest = max([run, *waiting], key=lambda r: (r.created_at, r.id))
    if newest is run:
        runs.transition(ctx.tx, run, states.QUEUED, JOB_LAUNCHER, detail=detail)
    for older in (r for r in (run, *waiting) if r is not newest):
        _supersede(ctx, older, newest)


def _supersede(ctx: HandlerContext, run: Run, newer: Run) -> None:
    reason = (
        f"superseded by run {newer.id}: dataset version {newer.dataset_version} arrived later "
        f"and {run.pipeline} trains only the newest waiting version"
    )
    runs.transition(ctx.tx, run, states.SUPERSEDED, JOB_LAUNCHER, reason=reason)
    ctx.touched(run.id)
