"""Runs: list with filters, and one run with its whole event timeline."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from ctflow import states
from ctflow.ledger import runs

from .deps import SessionDep
from .views import run_detail, run_summary

router = APIRouter(prefix="/runs", tags=["runs"])
RunState = Literal[states.ALL]  # type: ignore[valid-type]


@router.get("")
def list_runs(session: SessionDep, pipeline: str | None = None,
              state: RunState | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
    """Runs, newest first, optionally filtered by pipeline and state."""
    return [run_summary(r) for r in runs.listing(session, pipeline=pipeline, state=state, limit=limit)]


@router.get("/{run_id}")
def get_run(run_id: str, session: SessionDep) -> dict:
    """One run: state, trigger, dataset, hyperparameters, job, model and the full event timeline."""
    run = runs.get(session, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return run_detail(run, runs.timeline(session, run_id))
