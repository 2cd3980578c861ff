"""Runs and their timelines.

Runs are ORM objects once written (handlers change them in their transaction). New runs
and timeline entries are plain rows deferred to commit (ctflow.ledger.sql.defer_insert),
each table's written as one INSERT; `get`, `listing` and `timeline` write pending ones
before they read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import states
from ..events import Event, trace_id_for
from .sql import defer_insert, write_deferred
from .tables import Run, TimelineEntry, utcnow


def run_id_for(pipeline: str, *key: str) -> str:
    """Deterministic run id from what triggered it, so a replay names the same run."""
    digest = hashlib.sha256("\x1f".join((pipeline, *key)).encode()).hexdigest()[:16]
    return f"{pipeline}-{digest}"


def create(
    session: Session,
    *,
    run_id: str,
    pipeline: str,
    trigger: dict[str, Any],
    hyperparameters: dict[str, Any],
    service: str,
    dataset_version: str | None = None,
    dataset: dict[str, Any] | None = None,
) -> None:
    """Add a `requested` run, and its first timeline entry, to this transaction.

    Both rows are deferred to commit (ctflow.ledger.sql.defer_insert): the runs a batch of
    deliveries creates are written as one INSERT. `get` and `listing` see them before
    then. A second run with the same id fails the transaction at commit.
    """
    now = utcnow()
    defer_insert(
        session,
        Run,
        dict(
            id=run_id,
            pipeline=pipeline,
            state=states.REQUESTED,
            trigger=trigger,
            hyperparameters=hyperparameters,
            dataset_version=dataset_version,
            dataset=dataset,
            trace_id=trace_id_for(run_id),
            created_at=now,
            updated_at=now,
        ),
    )
    _note(session, run_id, "state", states.REQUESTED, service, None, None)


def get(session: Session, run_id: str, *, for_update: bool = False) -> Run | None:
    write_deferred(session)
    if for_update and session.bind is not None and session.bind.dialect.name == "postgresql":
        return session.scalars(select(Run).where(Run.id == run_id).with_for_update()).one_or_none()
    return session.get(Run, run_id)


def transition(
    session: Session,
    run: Run,
    target: str,
    service: str,
    *,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Move a run to `target` if the state machine allows it; record it on the timeline."""
    states.check(run.id, run.state, target)
    run.state = target
    if reason is not None:
        run.reason = reason
    note_state(session, run, service, detail)


def note_state(session: Session, run: Run, service: str, detail: dict[str, Any] | None = None) -> None:
    info = {**(detail or {}), **({"reason": run.reason} if run.reason else {})}
    _note(session, run.id, "state", run.state, service, None, info or None)


def note_event(session: Session, run_id: str, kind: str, event: Event, service: str) -> None:
    """`kind` is "received" or "emitted"."""
    _note(session, run_id, kind, event.type, service, event.id, {"source": event.source})


def _note(
    session: Session,
    run_id: str,
    kind: str,
    name: str,
    service: str,
    event_id: str | None,
    detail: dict[str, Any] | None,
) -> None:
    defer_insert(
        session,
        TimelineEntry,
        dict(run_id=run_id, at=utcnow(), kind=kind, name=name, service=service, event_id=event_id, detail=detail),
    )


def timeline(session: Session, run_id: str) -> list[TimelineEntry]:
    write_deferred(session)
    return list(session.scalars(select(TimelineEntry).where(TimelineEntry.run_id == run_id).order_by(TimelineEntry.id)))


def listing(session: Session, *, pipeline: str | None = None, state: str | None = None, limit: int = 100) -> list[Run]:
    write_deferred(session)
    query = select(Run)
    if pipeline:
        query = query.where(Run.pipeline == pipeline)
    if state:
        query = query.where(Run.state == state)
    return list(session.scalars(query.order_by(Run.created_at.desc(), Run.id).limit(limit)))


def with_live_jobs(session: Session, job_states: Sequence[str]) -> list[Run]:
    """Runs in `training`, and any run whose job is in one of `job_states` (not ended): the
    completion-handler may have moved a run on while its job record still says running."""
    write_deferred(session)
    training = select(Run).where(Run.state == states.TRAINING)
    live = select(Run).where(Run.job["state"].as_string().in_(job_states))
    found = {run.id: run for run in session.scalars(training)}
    found.update((run.id, run) for run in session.scalars(live))
    return list(found.values())


def pipelines_with(session: Session, state: str) -> list[str]:
    """The pipelines that have a run in `state`."""
    write_deferred(session)
    return list(session.scalars(select(Run.pipeline).where(Run.state == state).distinct()))


def ids_in(session: Session, state: str, *, limit: int) -> list[str]:
    """Ids of runs in `state`, the longest untouched first."""
    write_deferred(session)
    return list(session.scalars(select(Run.id).where(Run.state == state).order_by(Run.updated_at).limit(limit)))


def of_pipeline(
    session: Session,
    pipeline: str,
    state: str,
    *,
    oldest_first: bool = False,
    limit: int | None = None,
    for_update: bool = False,
) -> list[Run]:
    """A pipeline's runs in `state` (oldest first: the order they wait in), row-locked when `for_update`."""
    if limit == 0:
        return []
    write_deferred(session)
    query = select(Run).where(Run.pipeline == pipeline, Run.state == state)
    if oldest_first:
        query = query.order_by(Run.created_at, Run.id)
    if for_update:
        query = query.with_for_update()
    return list(session.scalars(query.limit(limit)))
