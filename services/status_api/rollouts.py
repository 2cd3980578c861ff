"""Rollouts: list with filters, and one rollout with its plan, where it is and every decision with its figures.

Read-only for now: the deployer that writes rollouts, and the promote/abort/pause/resume
commands, arrive with the serving stage (issue 10).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query

from ctflow import states

from .deps import DepsDep, LedgerText, found, read_ledger
from .views import rollout_detail, rollout_summary

if TYPE_CHECKING:  # not at start-up: the ledger's libraries load with the first request (cold start)
    from sqlalchemy.orm import Session

router = APIRouter(prefix="/rollouts", tags=["rollouts"])


@router.get("")
async def list_rollouts(
    deps: DepsDep,
    pipeline: LedgerText | None = None,
    environment: LedgerText | None = None,
    state: states.RolloutPhase | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict]:
    """Rollouts, newest first, optionally filtered by pipeline, environment and phase."""
    from ctflow.ledger import rollouts

    def read(session: Session) -> list[dict]:
        rows = rollouts.listing(session, pipeline=pipeline, environment=environment, phase=state, limit=limit)
        return [rollout_summary(r) for r in rows]

    return await read_ledger(deps, read)


@router.get("/{rollout_id}")
async def get_rollout(rollout_id: LedgerText, deps: DepsDep) -> dict:
    """One rollout: its plan, phase, step n of N, weight, and every decision with the figures it was made on."""
    from ctflow.ledger import rollouts

    def read(session: Session) -> dict | None:
        row = rollouts.get(session, rollout_id)
        return rollout_detail(row, rollouts.decisions(session, rollout_id)) if row else None

    return found(await read_ledger(deps, read), f"rollout {rollout_id!r}")
