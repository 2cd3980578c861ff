"""Rollouts and their decisions: one rollout per model version and environment, every tick's decision kept.

The deployer creates a rollout when a version is registered (concurrent deliveries of the
same registration make one: the row is unique on pipeline, environment and version),
saves the decision's state after each tick, and appends the decision with the figures it
was made on, so the status API can show why a canary went where it went.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..states import ROLLOUT_FINAL
from .sql import insert_ignore, write_deferred
from .tables import RolloutDecision, RolloutRow, utcnow


def rollout_id(pipeline: str, environment: str, version: str) -> str:
    """Deterministic, so a redelivered registration names the same rollout."""
    return f"{pipeline}-{environment}-v{version}"


def create(
    session: Session,
    *,
    pipeline: str,
    environment: str,
    candidate_version: str,
    stable_version: str | None,
    run_id: str | None,
    plan: dict[str, Any],
    state: dict[str, Any],
) -> str | None:
    """Add the rollout; its id, or None when this version already has one in this environment."""
    now, new_id = utcnow(), rollout_id(pipeline, environment, candidate_version)
    written = insert_ignore(
        session,
        RolloutRow,
        dict(
            id=new_id,
            pipeline=pipeline,
            environment=environment,
            candidate_version=candidate_version,
            stable_version=stable_version,
            run_id=run_id,
            phase=state["phase"],
            plan=plan,
            state=state,
            created_at=now,
            updated_at=now,
            ended_at=None,
        ),
    )
    return new_id if written is not None else None


def get(session: Session, rollout: str, *, for_update: bool = False) -> RolloutRow | None:
    query = select(RolloutRow).where(RolloutRow.id == rollout)
    return session.scalars(query.with_for_update() if for_update else query).one_or_none()


def save(session: Session, row: RolloutRow, state: dict[str, Any]) -> None:
    """The state after a tick (a new dict: SQLAlchemy notices JSON changes only on assignment)."""
    row.state = dict(state)
    row.phase = state["phase"]
    if row.phase in ROLLOUT_FINAL and row.ended_at is None:
        row.ended_at = utcnow()


def record(
    session: Session,
    rollout: str,
    *,
    at: datetime,
    phase: str,
    weight: int,
    verdict: str | None,
    reason: str,
    figures: dict[str, Any],
) -> None:
    session.add(
        RolloutDecision(
            rollout_id=rollout, at=at, phase=phase, weight=weight, verdict=verdict, reason=reason, figures=figures
        )
    )


def decisions(session: Session, rollout: str) -> list[RolloutDecision]:
    """Every decision on the rollout, oldest first."""
    session.flush()
    query = select(RolloutDecision).where(RolloutDecision.rollout_id == rollout).order_by(RolloutDecision.id)
    return list(session.scalars(query))


def listing(
    session: Session,
    *,
    pipeline: str | None = None,
    environment: str | None = None,
    phase: str | None = None,
    limit: int = 100,
) -> list[RolloutRow]:
    write_deferred(session)
    query = select(RolloutRow)
    if pipeline:
        query = query.where(RolloutRow.pipeline == pipeline)
    if environment:
        query = query.where(RolloutRow.environment == environment)
    if phase:
        query = query.where(RolloutRow.phase == phase)
    return list(session.scalars(query.order_by(RolloutRow.created_at.desc(), RolloutRow.id).limit(limit)))


def active(session: Session, pipeline: str, environment: str) -> list[RolloutRow]:
    """Rollouts of the pipeline in the environment that have not ended (a newer one supersedes them)."""
    query = select(RolloutRow).where(
        RolloutRow.pipeline == pipeline,
        RolloutRow.environment == environment,
        RolloutRow.phase.not_in(ROLLOUT_FINAL),
    )
    return list(session.scalars(query.order_by(RolloutRow.created_at)))


def serving(session: Session, pipeline: str, environment: str) -> RolloutRow | None:
    """The rollout whose version serves the environment now: the last one promoted (None: nothing serves)."""
    query = select(RolloutRow).where(
        RolloutRow.pipeline == pipeline, RolloutRow.environment == environment, RolloutRow.phase == "promoted"
    )
    return session.scalars(query.order_by(RolloutRow.ended_at.desc(), RolloutRow.id.desc()).limit(1)).first()


def needing_work(session: Session) -> list[str]:
    """Rollouts a tick has something to do for: not ended, or ended with actions not yet carried out."""
    query = select(RolloutRow.id).where(or_(RolloutRow.phase.not_in(ROLLOUT_FINAL), RolloutRow.pending.is_not(None)))
    return list(session.scalars(query.order_by(RolloutRow.created_at)))


class UnknownRollout(LookupError):
    """A command for a rollout the ledger does not hold."""


class RolloutEnded(Exception):
    """A promote/abort/pause/resume for a rollout that has ended: it changes nothing."""


def request(session: Session, rollout: str, command: str, by: str, at: datetime) -> RolloutRow:
    """Leave a person's command for the rollout's next tick (a later command replaces one not yet taken)."""
    row = get(session, rollout, for_update=True)
    if row is None:
        raise UnknownRollout(f"no rollout {rollout!r}")
    if row.phase in ROLLOUT_FINAL:
        raise RolloutEnded(f"rollout {rollout} has ended ({row.phase}); {command} changes nothing")
    row.command = {"command": command, "by": by, "at": at.isoformat()}
    return row
