"""Builds a service's FastAPI app: health, the CloudEvent/Pub/Sub endpoint at POST /, reconcile.

Each service's app.py is a few lines: its name, where its handlers live, its routers.
The HTTP plumbing, body limits, authentication and response codes live here once.
Only FastAPI is imported on the start-up path; the ledger, handlers and adapters are
built by the warm-up (ctflow.warmup), which requests await.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from . import logs
from .auth import Unauthorized
from .reconciling import ReconcileStep, run_due, step
from .refs import load_ref
from .topology import handlers_for
from .warmup import Warmup

if TYPE_CHECKING:
    from .deps import Dependencies
    from .handling import Handler, Handling
    from .intake import Intake

log = logging.getLogger(__name__)
REPLAY_HEADER = "ctflow-replay-of"

DepsFactory = Callable[[], "Dependencies"]


def relay_outbox(deps: Dependencies) -> dict:
    from datetime import timedelta

    sent = deps.relay.publish(older_than=timedelta(seconds=deps.settings.outbox_grace_seconds))
    return {"outbox_published": sent}


def forget_settled_failures(deps: Dependencies) -> dict:
    """Drop the failure counts of events that were handled in the end (ctflow.ledger.failures)."""
    from .ledger import failures

    with deps.ledger.transaction() as tx:
        return {"failure_counts_forgotten": failures.forget_settled(tx)}


# What every event-handling service does on a reconcile tick.
CORE_RECONCILERS: tuple[ReconcileStep, ...] = (step(relay_outbox), step(forget_settled_failures))


def handler_table(service: str) -> dict[str, Handler | Handling]:
    """What handles each event type `service` takes (ctflow.topology), imported now."""
    return {event_type: load_ref(ref) for event_type, ref in handlers_for(service).items()}


def _build_default() -> Dependencies:
    from .bootstrap import build

    return build()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or only its first `limit + 1` bytes when it is longer: enough to tell it is over
    the limit, and the rest is never read (a 50 MiB POST costs a megabyte, not fifty)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[: limit + 1]


async def dependencies(request: Request) -> Dependencies:
    """FastAPI dependency of every route but /healthz: the service's Dependencies, once warm-up has built
    them (503 until then), for an authenticated caller (401 otherwise; in gcp mode)."""
    try:
        deps, _ = await request.app.state.warmup.get()
    except Exception:
        log.exception("warm-up failed; asking the caller to retry")
        raise HTTPException(503, "service is not ready") from None
    refused = await caller_refused(deps, request)
    if refused is not None:
        status, body = refused
        raise HTTPException(status, body.get("error") or body.get("detail"))
    return deps


async def caller_refused(deps: Dependencies, request: Request) -> tuple[int, dict[str, str]] | None:
    """None for a caller the service's authenticator accepts (or when it has none: embedded); else the answer.

    The check runs in a thread: fetching Google's certificates (rarely) must not stall the event loop.
    """
    if deps.authenticate is None:
        return None
    try:
        await run_in_threadpool(deps.authenticate, request.headers)
    except Unauthorized as exc:
        log.warning("refused an unauthenticated call to %s: %s", request.url.path, exc)
        return 401, {"error": str(exc)}
    except Exception:
        log.exception("could not check the caller's token; asking the sender to retry")
        return 503, {"status": "retry", "detail": "cannot verify callers right now"}
    return None


def create_service(
    name: str,
    *,
    takes_events: bool = True,
    handlers: Mapping[str, Handler | Handling] | None = None,
    routers: Sequence[APIRouter] = (),
    reconcilers: Sequence[ReconcileStep] = CORE_RECONCILERS,
    deps_factory: DepsFactory | None = None,
) -> FastAPI:
    """A service's app. One that `takes_events` receives them at POST / and hands each to its
    handler: the ones ctflow.topology names for this service, or `handlers` (tests)."""

    def warm(app: FastAPI) -> tuple[Dependencies, Intake | None]:
        from .intake import Intake

        deps = getattr(app.state, "deps", None) or (deps_factory or _build_default)()
        app.state.deps = deps
        logs.configure(name, deps.settings.gcp_project)  # trace ids become projects/P/traces/T
        intake = Intake(name, handlers if handlers is not None else handler_table(name), deps) if takes_events else None
        # What start-up built (modules, engine, schemas, ~100k objects) lives as long as the process:
        # frozen, the collector's full passes skip it. Unfrozen, each pass stopped every request
        # for ~70 ms every few seconds under load, which set the p99. Garbage is collected first,
        # so none of it is frozen for good.
        gc.collect()
        gc.freeze()
        return deps, intake

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logs.configure(name)
        app.state.warmup = Warmup(lambda: warm(app))
        yield

    app = FastAPI(title=f"ctflow {name}", lifespan=lifespan)

    @app.get("/healthz")
    def healthz(request: Request) -> dict:
        """Liveness: the process answers. `ready` says whether warm-up has built the handlers."""
        return {"status": "ok", "service": name, "ready": request.app.state.warmup.ready}

    async def authorised(request: Request) -> tuple[Dependencies, Intake | None] | JSONResponse:
        try:
            deps, intake = await request.app.state.warmup.get()
        except Exception:
            log.exception("warm-up failed; asking the sender to retry")
            return JSONResponse({"status": "retry", "detail": "service is not ready"}, status_code=503)
        refused = await caller_refused(deps, request)
        return JSONResponse(refused[1], status_code=refused[0]) if refused is not None else (deps, intake)

    if takes_events:

        async def receive(request: Request) -> JSONResponse:
            """Receive one CloudEvent (binary or structured) or Pub/Sub push message."""
            ready = await authorised(request)
            if isinstance(ready, JSONResponse):
                return ready
            deps, intake = ready
            assert intake is not None, "POST / exists only for a service with handlers"
            body = await read_body(request, deps.settings.max_request_bytes)
            try:
                outcome = await intake.receive_async(
                    dict(request.headers),
                    body,
                    replay_of=request.headers.get(REPLAY_HEADER),
                )
            except Exception:
                log.exception("transient failure handling a delivery; asking the sender to retry")
                return JSONResponse({"status": "retry"}, status_code=503)
            except asyncio.CancelledError:
                # The server is stopping and its grace period ran out (uvicorn cancels what is still
                # running, and would answer 500). Whether or not the delivery committed, the sender
                # retries a 503 and the inbox dedupes: the same answer as any transient failure.
                log.warning("shutting down before a delivery was settled; asking the sender to retry")
                return JSONResponse({"status": "retry", "detail": "service is shutting down"}, status_code=503)
            return JSONResponse(outcome.to_json())

        # A plain Starlette route: senders are machines, and FastAPI's per-request machinery
        # (dependencies, parameter parsing) cost about 0.1 ms of CPU per event for nothing here.
        app.router.routes.append(Route("/", receive, methods=["POST"]))

    @app.post("/reconcile")
    async def reconcile(request: Request) -> JSONResponse:
        """One reconcile tick for this service (Cloud Scheduler calls it every minute)."""
        ready = await authorised(request)
        if isinstance(ready, JSONResponse):
            return ready
        deps, _ = ready
        report = await run_in_threadpool(run_due, deps, reconcilers)
        return JSONResponse(report, status_code=500 if "failed" in report else 200)

    for router in routers:
        app.include_router(router)
    return app
