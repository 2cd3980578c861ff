"""The status-api service. Container: `uvicorn status_api.app:app --host 0.0.0.0 --port $PORT`."""

from fastapi import FastAPI

from ctflow.reconciling import ReconcileStep
from ctflow.service import DepsFactory, create_service
from ctflow.topology import STATUS_API

from . import dead_letters, models, rollouts, runs

RECONCILERS: tuple[ReconcileStep, ...] = ()


def create_app(deps_factory: DepsFactory | None = None) -> FastAPI:
    return create_service(
        STATUS_API,
        takes_events=False,
        routers=[runs.router, dead_letters.router, rollouts.router, models.router],
        reconcilers=RECONCILERS,
        deps_factory=deps_factory,
    )


app = create_app()
