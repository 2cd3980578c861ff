"""Builds a service's FastAPI app: health, the CloudEvent/Pub/Sub endpoint at POST /, reconcile.

Each service's app.py is a few lines: its name and its handlers. The HTTP plumbing,
body limits, authentication and response codes live here once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from . import logs
from .auth import Unauthorized
from .deps import Dependencies
from .intake import MAX_STORED_BODY, Handler, Intake

log = logging.getLogger(__name__)
REPLAY_HEADER = "ctflow-replay-of"

DepsFactory = Callable[[], Dependencies]
Reconciler = Callable[[Dependencies], dict]


def relay_outbox(deps: Dependencies) -> dict:
    sent = deps.relay.publish(older_than=timedelta(seconds=deps.settings.outbox_grace_seconds))
    return {"outbox_published": sent}


def _default_deps() -> Dependencies:
    from .bootstrap import build

    return build()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body up to what a dead letter keeps; Cloud Run caps requests at 32 MiB anyway."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    return b"".join(chunks)


def create_service(
    name: str,
    handlers: Mapping[str, Handler] | None = None,
    *,
    routers: Sequence[APIRouter] = (),
    reconcilers: Sequence[Reconciler] = (relay_outbox,),
    deps_factory: DepsFactory | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        deps = app.state.deps if getattr(app.state, "deps", None) else (deps_factory or _default_deps)()
        logs.configure(name, deps.settings.gcp_project)
        app.state.deps = deps
        app.state.intake = Intake(name, handlers or {}, deps)
        yield

    app = FastAPI(title=f"ctflow {name}", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict:
        """Liveness and readiness: the process is up and its lifespan has run."""
        return {"status": "ok", "service": name}

    if handlers is not None:
        @app.post("/")
        async def receive(request: Request) -> JSONResponse:
            """Receive one CloudEvent (binary or structured) or Pub/Sub push message."""
            deps: Dependencies = request.app.state.deps
            try:
                deps.authenticate(request.headers)
            except Unauthorized as exc:
                return JSONResponse({"error": str(exc)}, status_code=401)
            body = await read_body(request, MAX_STORED_BODY)
            try:
                outcome = await run_in_threadpool(
                    request.app.state.intake.receive, dict(request.headers), body,
                    replay_of=request.headers.get(REPLAY_HEADER),
                )
            except Exception:
                log.exception("transient failure handling a delivery; asking the sender to retry")
                return JSONResponse({"status": "retry"}, status_code=503)
            return JSONResponse(outcome.to_json())

    @app.post("/reconcile")
    async def reconcile(request: Request) -> dict:
        """One reconcile tick for this service (Cloud Scheduler calls it every minute)."""
        deps: Dependencies = request.app.state.deps
        try:
            deps.authenticate(request.headers)
        except Unauthorized as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)  # type: ignore[return-value]
        report: dict = {}
        for step in reconcilers:
            report.update(await run_in_threadpool(step, deps))
        return report

    for router in routers:
        app.include_router(router)
    return app
