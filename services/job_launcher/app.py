"""The job-launcher service. Container: `uvicorn job_launcher.app:app --host 0.0.0.0 --port $PORT`."""

from typing import Any

from fastapi import FastAPI

from ctflow.deps import Dependencies
from ctflow.reconciling import step
from ctflow.service import CORE_RECONCILERS, DepsFactory, create_service
from ctflow.topology import JOB_LAUNCHER


def reconcile_jobs(deps: Dependencies) -> dict[str, Any]:
    """Finish launches, poll running jobs, start queued runs (imported on the first tick, not at start-up)."""
    from .reconcile import reconcile_jobs as step

    return step(deps)


RECONCILERS = (*CORE_RECONCILERS, step(reconcile_jobs))


def create_app(deps_factory: DepsFactory | None = None) -> FastAPI:
    return create_service(JOB_LAUNCHER, reconcilers=RECONCILERS, deps_factory=deps_factory)


app = create_app()
