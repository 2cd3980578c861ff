"""A delivery still being handled when a service stops and its grace period runs out is answered 503 (retry),
as any transient failure is: uvicorn cancels it, and would answer 500."""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn

from ctflow.events import Event, to_http_binary
from ctflow.handling import HandlerContext, Outcome
from ctflow.service import create_service
from tests.support import free_port

EVENT_TYPE = "test.slow.v1"


def test_a_delivery_cut_short_by_shutdown_is_asked_to_be_retried(deps):
    entered, release = threading.Event(), threading.Event()

    def slow(ctx: HandlerContext) -> Outcome:
        entered.set()
        release.wait(30)
        return Outcome("processed")

    app = create_service("test-consumer", handlers={EVENT_TYPE: slow}, reconcilers=(), deps_factory=lambda: deps)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=1)
    )
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    while not server.started:
        time.sleep(0.01)
    answers: list[httpx.Response] = []
    headers, body = to_http_binary(Event(type=EVENT_TYPE, source="//test", id="slow-1", data={}))
    sender = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"http://127.0.0.1:{port}/", content=body, headers=headers, timeout=30)
        )
    )
    sender.start()
    try:
        assert entered.wait(10)
        server.should_exit = True  # what SIGTERM does; the handler outlives the 1 s grace period
        sender.join(20)
    finally:
        release.set()
        serving.join(20)
    [answer] = answers
    assert answer.status_code == 503 and answer.json()["detail"] == "service is shutting down"
