"""Runs: list with filters, and one run with its whole event timeline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query

from ctflow import states

from .deps import DepsDep, LedgerText, found, read_ledger
from .views import run_detail, run_summary

if TYPE_CHECKING:  # not at start-up: the ledger's libraries load with the first request (cold start)
    from sqlalchemy.orm import Session

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("")
async def list_runs(
    deps: DepsDep,
    pipeline: LedgerText | None = None,
    state: states.RunState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict]:
    """Runs, newest first, optionally filtered by pipeline and state."""
    from ctflow.ledger import runs

    return await read_ledger(
        deps,
        lambda session: [run_summary(r) for r in runs.listing(session, pipeline=pipeline, state=state, limit=limit)],
    )


@router.get("/{run_id}")
async def get_run(run_id: LedgerText, deps: DepsDep) -> dict:
    """One run: state, trigger, dataset, hyperparameters, job, model and the full event timeline."""
    from ctflow.ledger import runs

    def read(session: Session) -> dict | None:
        run = runs.get(session, run_id)
        return run_detail(run, runs.timeline(session, run_id)) if run else None

    return found(await read_ledger(deps, read), f"run {run_id!r}")
