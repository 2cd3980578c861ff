"""The embedded bus's publish endpoint: what the Pub/Sub API is to processes outside the stack.

Trainer processes report `training.completed` here (their CTFLOW_REPORT_URI), so the
report reaches every subscriber of the events topic, the completion-handler and the
job-launcher alike, as it does through Pub/Sub on Google Cloud. A request is one
CloudEvent in HTTP binary or structured mode, published in the CloudEvents Pub/Sub
binding; a sender that retries publishes the same CloudEvent id again, which the
subscribers' inboxes dedupe. Loopback only, like the rest of the embedded stack.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..bus import MessageBus
from ..codec import MalformedRequest, decode_cloudevent
from ..events import to_pubsub
from ..service import read_body
from ..topology import EVENTS_TOPIC

PUBLISHABLE_TOPICS = (EVENTS_TOPIC,)


def create_publisher_app(bus: MessageBus, max_bytes: int) -> FastAPI:
    """`max_bytes`: the largest event taken (the services' CTFLOW_MAX_REQUEST_BYTES)."""
    app = FastAPI(title="ctflow embedded bus")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "service": "embedded-bus"}

    @app.post("/topics/{topic}")
    async def publish(topic: str, request: Request) -> JSONResponse:
        """Publish one CloudEvent to `topic`; answers its message id."""
        if topic not in PUBLISHABLE_TOPICS:
            return JSONResponse(
                {"error": f"unknown topic {topic!r}; publishable: {', '.join(PUBLISHABLE_TOPICS)}"}, status_code=404
            )
        body = await read_body(request, max_bytes)
        if len(body) > max_bytes:
            return JSONResponse({"error": f"event is over the {max_bytes}-byte limit"}, status_code=413)
        try:
            event = decode_cloudevent(dict(request.headers), body)
        except MalformedRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        data, attributes = to_pubsub(event)
        message_id = await run_in_threadpool(bus.publish, topic, data, attributes)
        return JSONResponse({"message_id": message_id})

    return app
