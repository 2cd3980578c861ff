"""The completion-handler service. Container: `uvicorn completion_handler.app:app --host 0.0.0.0 --port $PORT`."""

from ctflow.service import DepsFactory, create_service, relay_outbox
from ctflow.topology import COMPLETION_HANDLER

HANDLERS: dict = {}  # its event handlers arrive with the training/serving stages
RECONCILERS = (relay_outbox,)


def create_app(deps_factory: DepsFactory | None = None):  # type: ignore[no-untyped-def]
    return create_service(COMPLETION_HANDLER, HANDLERS, reconcilers=RECONCILERS, deps_factory=deps_factory)


app = create_app()
