"""The completion-handler service. Container: `uvicorn completion_handler.app:app --host 0.0.0.0 --port $PORT`."""

from typing import Any

from fastapi import FastAPI

from ctflow.deps import Dependencies
from ctflow.reconciling import step
from ctflow.service import CORE_RECONCILERS, DepsFactory, create_service
from ctflow.topology import COMPLETION_HANDLER


def finish_evaluations(deps: Dependencies) -> dict[str, Any]:
    """Reconcile: finish runs a crash left in `evaluating` (the evaluation code is imported only now)."""
    from completion_handler.finishing import finish_stuck

    return finish_stuck(deps)


RECONCILERS = (*CORE_RECONCILERS, step(finish_evaluations))


def create_app(deps_factory: DepsFactory | None = None) -> FastAPI:
    return create_service(COMPLETION_HANDLER, reconcilers=RECONCILERS, deps_factory=deps_factory)


app = create_app()
