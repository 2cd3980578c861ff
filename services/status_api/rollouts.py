"""Rollouts: list with filters, one rollout with its plan, where it is and every decision with its figures,
and a person's promote / abort / pause / resume.

A command is kept on the rollout (`rollouts.command`) and taken by the deployer's next
tick, which decides on it like on any observation (deployer.decide) and records who
asked; the answer is 202 with the rollout as it is now. A command for a rollout that
has ended is a 409 and changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

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
        if row is None:
            return None
        return rollout_detail(row, rollouts.decisions(session, rollout_id), observed_traffic(deps, row.serving))

    return found(await read_ledger(deps, read), f"rollout {rollout_id!r}")


class CommandBody(BaseModel):
    by: str = Field("status-api", max_length=200, description="Who asks (recorded with the decision).")
    reason: str | None = Field(None, max_length=1000)


@router.post("/{rollout_id}/{command}", status_code=202)
async def command_rollout(
    rollout_id: LedgerText,
    command: Literal["promote", "abort", "pause", "resume"],
    deps: DepsDep,
    body: Annotated[CommandBody | None, Body()] = None,
) -> JSONResponse:
    """Promote, abort, pause or resume a rollout: taken by the deployer's next tick."""
    from starlette.concurrency import run_in_threadpool

    from ctflow.ledger import rollouts

    said = body or CommandBody()
    who = said.by + (f" ({said.reason})" if said.reason else "")

    def write() -> dict:
        with deps.ledger.transaction() as tx:
            row = rollouts.request(tx, rollout_id, command, who, datetime.now(UTC))
            return rollout_summary(row) | {"pending_command": row.command}

    try:
        view = await run_in_threadpool(write)
    except rollouts.UnknownRollout as exc:
        raise HTTPException(404, str(exc)) from None
    except rollouts.RolloutEnded as exc:
        raise HTTPException(409, str(exc)) from None
    return JSONResponse(jsonable(view), status_code=202)


def observed_traffic(deps: Any, serving: dict | None) -> dict[str, int] | None:
    """The service's split as its backend applies it now, when this process runs that backend (the embedded
    stack); None otherwise (asking would start a router here)."""
    if not serving or not deps.built("serving"):
        return None
    try:
        return dict(deps.serving.traffic(serving["service"]))
    except Exception:  # noqa: BLE001 - a view, not a decision: show what is known
        return None


def jsonable(view: dict) -> Any:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(view)
