"""Runs: list with filters, and one run with its whole event timeline."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from starlette.concurrency import run_in_threadpool

from ctflow import states

from .deps import DepsDep
from .views import run_detail, run_summary

router = APIRouter(prefix="/runs", tags=["runs"])
RunState = Literal[states.ALL]  # type: ignore[valid-type]


@router.get("")
async def list_runs(deps: DepsDep, pipeline: str | None = None, state: RunState | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
    """Runs, newest first, optionally filtered by pipeline and state."""
    from ctflow.ledger import runs

    def read() -> list[dict]:
        with deps.ledger.transaction() as session:
            return [run_summary(r) for r in runs.listing(session, pipeline=pipeline, state=state, limit=limit)]

    return await run_in_threadpool(read)


@router.get("/{run_id}")
async def get_run(run_id: str, deps: DepsDep) -> dict:
    """One run: state, trigger, dataset, hyperparameters, job, model and the full event timeline."""
    from ctflow.ledger import runs

    def read() -> dict | None:
        with deps.ledger.transaction() as session:
            run = runs.get(session, run_id)
            return run_detail(run, runs.timeline(session, run_id)) if run else None

    found = await run_in_threadpool(read)
    if found is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return found
