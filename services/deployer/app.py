"""The deployer service. Container: `uvicorn deployer.app:app --host 0.0.0.0 --port $PORT`."""

from fastapi import FastAPI

from ctflow.deps import Dependencies
from ctflow.reconciling import step
from ctflow.service import CORE_RECONCILERS, DepsFactory, create_service
from ctflow.topology import DEPLOYER


def advance_rollouts(deps: Dependencies) -> dict:
    """One tick of every rollout under way (deployer.rollout)."""
    from .rollout import advance_rollouts as advance

    return advance(deps)


RECONCILERS = (*CORE_RECONCILERS, step(advance_rollouts, every=lambda settings: settings.rollout_tick_seconds))


def create_app(deps_factory: DepsFactory | None = None) -> FastAPI:
    return create_service(DEPLOYER, reconcilers=RECONCILERS, deps_factory=deps_factory)


app = create_app()
