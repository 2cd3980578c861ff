"""The embedded bus pushes as Pub/Sub push does: the same envelope, retries with exponential
backoff, and after the last attempt a ctflow dead letter holding the request and why it failed.

A real HTTP server (uvicorn on a loopback port) answers each push as a test scripts it; the
ledger is SQLite or PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable

from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from ctflow.bus.ledger_bus import LedgerBus
from ctflow.embedded.dispatcher import Dispatcher
from ctflow.ledger.tables import BusDelivery, DeadLetter
from ctflow.topology import HPARAM_CONSUMER, HPARAMS_TOPIC
from tests.support import free_port, serving

MESSAGE = json.dumps({"pipeline": "digits", "hyperparameters": {"lr": 0.01}}).encode()


class ScriptedService:
    """Answers the n-th push with `answers[n]` (the last one from then on); keeps each push and its time."""

    def __init__(self, *answers: Callable[[], object]) -> None:
        self.answers = answers
        self.pushes: list[tuple[float, dict]] = []
        self.app = Starlette(routes=[Route("/", self._receive, methods=["POST"])])

    async def _receive(self, request: Request):  # type: ignore[no-untyped-def]
        self.pushes.append((time.monotonic(), json.loads(await request.body())))
        return self.answers[min(len(self.pushes), len(self.answers)) - 1]()


def _ok() -> JSONResponse:
    return JSONResponse({"status": "processed"})


def _not_ready() -> JSONResponse:
    return JSONResponse({"status": "retry", "detail": "service is not ready"}, status_code=503)


def _deliveries(deps) -> list[BusDelivery]:  # type: ignore[no-untyped-def]
    with deps.ledger.reading() as tx:
        return list(tx.scalars(select(BusDelivery)))


def _dispatch_until_settled(deps, url: str, settings) -> list[BusDelivery]:  # type: ignore[no-untyped-def]
    dispatcher = Dispatcher(deps.ledger, settings, {HPARAM_CONSUMER: url}, threading.Event())
    deadline = time.monotonic() + 30
    try:
        while any(d.status == "pending" for d in _deliveries(deps)):
            assert time.monotonic() < deadline, "deliveries still pending after 30 s"
            dispatcher.dispatch_due()
            time.sleep(0.01)
    finally:
        dispatcher.close()
    return _deliveries(deps)


def test_a_push_is_a_pubsub_envelope_retried_with_growing_backoff_until_acknowledged(deps):
    service = ScriptedService(_not_ready, _not_ready, _ok)
    message_id = LedgerBus(deps.ledger).publish(HPARAMS_TOPIC, MESSAGE, {"origin": "test"})
    with serving(service.app) as url:
        [delivery] = _dispatch_until_settled(deps, url, deps.settings)
    assert (delivery.status, delivery.attempts, delivery.subscription) == ("acked", 3, "hparam-consumer-push")
    times, bodies = zip(*service.pushes, strict=True)
    assert len(bodies) == 3 and all(body == bodies[0] for body in bodies)  # the same message every time
    envelope = bodies[0]
    assert envelope["subscription"] == "projects/ctflow-embedded/subscriptions/hparam-consumer-push"
    assert envelope["message"]["messageId"] == message_id
    assert base64.b64decode(envelope["message"]["data"]) == MESSAGE
    assert envelope["message"]["attributes"] == {"origin": "test"} and envelope["message"]["publishTime"]
    backoff = deps.settings.bus_backoff_seconds
    assert times[1] - times[0] >= backoff and times[2] - times[1] >= 2 * backoff  # exponential, never a storm
    with deps.ledger.reading() as tx:
        assert tx.scalar(select(DeadLetter)) is None


def test_after_the_last_attempt_the_push_is_a_dead_letter_with_the_services_answer(deps):
    settings = deps.settings.model_copy(update={"bus_max_attempts": 3})
    service = ScriptedService(_not_ready)
    LedgerBus(deps.ledger).publish(HPARAMS_TOPIC, MESSAGE, {})
    with serving(service.app) as url:
        [delivery] = _dispatch_until_settled(deps, url, settings)
        time.sleep(4 * settings.bus_backoff_seconds)
        later = Dispatcher(deps.ledger, settings, {HPARAM_CONSUMER: url}, threading.Event())
        try:
            assert later.dispatch_due() == 0  # a dead delivery is never due again
        finally:
            later.close()
    assert (delivery.status, delivery.attempts) == ("dead", 3) and len(service.pushes) == 3  # then no more
    with deps.ledger.reading() as tx:
        [letter] = tx.scalars(select(DeadLetter)).all()
    assert letter.consumer == HPARAM_CONSUMER and letter.status == "open"
    assert letter.reason == (
        "delivery to hparam-consumer-push failed 3 times; last error: "
        "hparam-consumer answered HTTP 503: service is not ready"
    )
    assert json.loads(letter.request["body"]) == service.pushes[0][1]  # kept whole, for a replay


def test_a_service_that_cannot_be_reached_is_retried_then_dead_lettered_saying_so(deps):
    settings = deps.settings.model_copy(update={"bus_max_attempts": 2})
    LedgerBus(deps.ledger).publish(HPARAMS_TOPIC, MESSAGE, {})
    [delivery] = _dispatch_until_settled(deps, f"http://127.0.0.1:{free_port()}/", settings)
    assert (delivery.status, delivery.attempts) == ("dead", 2)
    with deps.ledger.reading() as tx:
        [letter] = tx.scalars(select(DeadLetter)).all()
    assert "hparam-consumer unreachable" in letter.reason


def test_a_plain_text_refusal_is_quoted_in_the_reason(deps):
    settings = deps.settings.model_copy(update={"bus_max_attempts": 1})
    service = ScriptedService(lambda: PlainTextResponse("upstream connect error", status_code=502))
    LedgerBus(deps.ledger).publish(HPARAMS_TOPIC, MESSAGE, {})
    with serving(service.app) as url:
        _dispatch_until_settled(deps, url, settings)
    with deps.ledger.reading() as tx:
        [letter] = tx.scalars(select(DeadLetter)).all()
    assert letter.reason.endswith("hparam-consumer answered HTTP 502: upstream connect error")
