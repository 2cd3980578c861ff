"""The hparam-consumer service. Container: `uvicorn hparam_consumer.app:app --host 0.0.0.0 --port $PORT`."""

from fastapi import FastAPI

from ctflow.service import CORE_RECONCILERS, DepsFactory, create_service
from ctflow.topology import HPARAM_CONSUMER

RECONCILERS = CORE_RECONCILERS


def create_app(deps_factory: DepsFactory | None = None) -> FastAPI:
    return create_service(HPARAM_CONSUMER, reconcilers=RECONCILERS, deps_factory=deps_factory)


app = create_app()
