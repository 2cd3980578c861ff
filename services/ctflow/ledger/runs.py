"""Runs and their timelines.

Runs are ORM objects (handlers change them in their transaction). Timeline entries are
plain rows deferred to commit (ctflow.ledger.sql.defer_insert), written in call order as
one INSERT; `timeline` writes pending ones before it reads.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, make_transient_to_detached

from .. import states
from ..events import Event, trace_id_for
from .sql import defer_insert, insert_rows, write_deferred
from .tables import Run, TimelineEntry, utcnow

_UNSET_COLUMNS = {column.key: None for column in Run.__table__.columns}  # a new run's empty fields, loaded


def run_id_for(pipeline: str, *key: str) -> str:
    """Deterministic run id from what triggered it, so a replay names the same run."""
    digest = hashlib.sha256("\x1f".join((pipeline, *key)).encode()).hexdigest()[:16]
    return f"{pipeline}-{digest}"


def create(session: Session, *, run_id: str, pipeline: str, trigger: dict[str, Any], hyperparameters: dict[str, Any],
           service: str, dataset_version: str | None = None, dataset: dict[str, Any] | None = None) -> Run:
    """Insert a `requested` run and return it attached to `session`, live as if loaded.

    The row is written with one plain INSERT and the object joins the session as
    persistent, so later changes flush as UPDATEs: this skips a unit-of-work flush, the
    costliest step of creating a run. A second run with the same id fails here, at once.
    """
    now = utcnow()
    values = dict(id=run_id, pipeline=pipeline, state=states.REQUESTED, trigger=trigger,
                  hyperparameters=hyperparameters, dataset_version=dataset_version, dataset=dataset,
                  trace_id=trace_id_for(run_id), created_at=now, updated_at=now)
    insert_rows(session, Run, [values])
    run = Run(**{**_UNSET_COLUMNS, **values})
    make_transient_to_detached(run)
    session.add(run)
    note_state(session, run, service)
    return run


def get(session: Session, run_id: str, *, for_update: bool = False) -> Run | None:
    if for_update and session.bind is not None and session.bind.dialect.name == "postgresql":
        return session.scalars(select(Run).where(Run.id == run_id).with_for_update()).one_or_none()
    return session.get(Run, run_id)


def transition(session: Session, run: Run, target: str, service: str, *, reason: str | None = None,
               detail: dict[str, Any] | None = None) -> None:
    """Move a run to `target` if the state machine allows it; record it on the timeline."""
    states.check(run.id, run.state, target)
    run.state = target
    if reason is not None:
        run.reason = reason
    note_state(session, run, service, detail)


def note_state(session: Session, run: Run, service: str, detail: dict[str, Any] | None = None) -> None:
    info = {**(detail or {}), **({"reason": run.reason} if run.reason else {})}
    defer_insert(session, TimelineEntry, dict(run_id=run.id, at=utcnow(), kind="state", name=run.state,
                                              service=service, event_id=None, detail=info or None))


def note_event(session: Session, run_id: str, kind: str, event: Event, service: str) -> None:
    """`kind` is "received" or "emitted"."""
    defer_insert(session, TimelineEntry, dict(run_id=run_id, at=utcnow(), kind=kind, name=event.type,
                                              service=service, event_id=event.id, detail={"source": event.source}))


def timeline(session: Session, run_id: str) -> list[TimelineEntry]:
    write_deferred(session)
    return list(session.scalars(select(TimelineEntry).where(TimelineEntry.run_id == run_id).order_by(TimelineEntry.id)))


def listing(session: Session, *, pipeline: str | None = None, state: str | None = None, limit: int = 100) -> list[Run]:
    query = select(Run)
    if pipeline:
        query = query.where(Run.pipeline == pipeline)
    if state:
        query = query.where(Run.state == state)
    return list(session.scalars(query.order_by(Run.created_at.desc(), Run.id).limit(limit)))
