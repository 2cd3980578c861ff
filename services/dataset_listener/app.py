"""The dataset-listener service. Container: `uvicorn dataset_listener.app:app --host 0.0.0.0 --port $PORT`."""

from fastapi import FastAPI

from ctflow.service import CORE_RECONCILERS, DepsFactory, create_service
from ctflow.topology import DATASET_LISTENER

RECONCILERS = CORE_RECONCILERS


def create_app(deps_factory: DepsFactory | None = None) -> FastAPI:
    return create_service(DATASET_LISTENER, reconcilers=RECONCILERS, deps_factory=deps_factory)


app = create_app()
