"""What the ledger cannot store is refused at the intake as a dead letter, never retried for ever.

PostgreSQL refuses values longer than their columns (SQLite stores them): an event whose
id, source or type is too long, or whose handler writes such a value, would otherwise
fail its transaction on every redelivery (a 503 each time).
"""

from __future__ import annotations

import json

from sqlalchemy import select

from ctflow.events import Event, to_http_binary
from ctflow.handling import HandlerContext, Outcome
from ctflow.intake import Intake
from ctflow.ledger import runs
from ctflow.ledger.tables import DeadLetter, InboxEntry
from tests.support import push_request

EVENT_TYPE = "test.limits.v1"


def _creates_a_run(run_id: str):  # type: ignore[no-untyped-def]
    def handler(ctx: HandlerContext) -> Outcome:
        runs.create(
            ctx.tx, run_id=run_id, pipeline="digits", trigger={"kind": "test"}, hyperparameters={}, service="test"
        )
        return Outcome("processed")

    return handler


def _letters(deps) -> list[DeadLetter]:  # type: ignore[no-untyped-def]
    with deps.ledger.reading() as tx:
        return list(tx.scalars(select(DeadLetter).order_by(DeadLetter.created_at)))


def test_over_long_ids_sources_and_types_are_dead_letters_kept_whole(deps):
    """Each is refused before anything is written, kept under a stand-in key, with the reason; the
    same request delivered again is a duplicate, and a different one with the same body is not."""
    intake = Intake("test-consumer", {EVENT_TYPE: _creates_a_run("digits-ok")}, deps)
    requests = {
        "id": to_http_binary(Event(type=EVENT_TYPE, source="//test", id="i" * 300, data={})),
        "source": to_http_binary(Event(type=EVENT_TYPE, source="//" + "s" * 600, id="1", data={})),
        "type": to_http_binary(Event(type="t" * 300, source="//test", id="1", data={})),
    }
    for what, (headers, body) in requests.items():
        outcome = intake.receive(headers, body)
        assert outcome.status == "rejected" and f"event {what} is" in outcome.detail, outcome.detail
        assert intake.receive(headers, body).status == "duplicate"
    letters = _letters(deps)
    assert len(letters) == 3 and all(letter.request["body"] == "{}" for letter in letters)
    with deps.ledger.reading() as tx:
        assert (
            tx.scalar(
                select(InboxEntry).where(InboxEntry.consumer == "test-consumer", InboxEntry.outcome == "processed")
            )
            is None
        )


def test_an_over_long_message_id_is_a_dead_letter(deps, consumer):
    """The hparam-consumer dedupes on the messageId: one too long to keep is refused, not retried."""
    headers, body = push_request({"pipeline": "digits"}, "m" * 400)
    answer = consumer.post("/", content=body, headers=headers)
    assert answer.status_code == 200 and answer.json()["status"] == "rejected"
    assert "event id is 400 characters long" in answer.json()["detail"]


def test_nul_characters_in_ids_and_sources_are_dead_letters(deps, consumer):
    """JSON can carry a NUL (\\u0000) that PostgreSQL's text cannot: refused before anything is written."""
    structured = json.dumps(
        {"specversion": "1.0", "type": EVENT_TYPE, "source": "//test", "id": "a\u0000b", "data": {}}
    ).encode()
    intake = Intake("test-consumer", {EVENT_TYPE: _creates_a_run("digits-ok")}, deps)
    outcome = intake.receive({"content-type": "application/cloudevents+json"}, structured)
    assert outcome.status == "rejected" and "event id contains a NUL character" in outcome.detail
    headers, body = push_request({"pipeline": "digits"}, "m\u0000")
    answer = consumer.post("/", content=body, headers=headers).json()
    assert answer["status"] == "rejected" and "contains a NUL character" in answer["detail"]
    assert len(_letters(deps)) == 2


def test_a_value_the_database_refuses_is_a_dead_letter_not_a_retry(deps):
    """A handler writes a run id longer than its column: PostgreSQL refuses it, for good, so the event is
    dead-lettered with the database's reason (SQLite stores it: processed)."""
    intake = Intake("test-consumer", {EVENT_TYPE: _creates_a_run("digits-" + "x" * 100)}, deps)
    outcome = intake.receive(*to_http_binary(Event(type=EVENT_TYPE, source="//test", id="long-run", data={})))
    if deps.ledger.dialect == "postgresql":
        assert outcome.status == "rejected" and "value too long" in outcome.detail, outcome.detail
        assert [letter.event_id for letter in _letters(deps)] == ["long-run"]
    else:
        assert outcome.status == "processed"


def test_reading_a_body_stops_just_past_the_limit():
    """A 50 MiB body is read one chunk past the limit, no further."""
    import asyncio

    from starlette.requests import Request

    from ctflow.service import read_body

    handed = 0

    async def receive() -> dict:
        nonlocal handed
        handed += 1
        return {"type": "http.request", "body": b"x" * (1024 * 1024), "more_body": handed < 50}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    body = asyncio.run(read_body(request, 1024 * 1024))
    assert len(body) == 1024 * 1024 + 1 and handed == 2


def test_an_oversized_body_is_a_dead_letter_with_a_prefix_and_its_true_size(deps, listener):
    """50 MiB over HTTP: rejected with the declared size, the letter keeps 64 KiB of it, a redelivery is a
    duplicate, and listing letters loads no bodies."""
    from sqlalchemy import inspect

    from ctflow.ledger import dead_letters

    body = b"{" + b" " * (50 * 1024 * 1024) + b"}"
    headers = {"content-type": "application/cloudevents+json"}
    answer = listener.post("/", content=body, headers=headers)
    assert answer.status_code == 200 and answer.json()["status"] == "rejected"
    assert f"request body is {len(body)} bytes, over the" in answer.json()["detail"]
    assert listener.post("/", content=body, headers=headers).json()["status"] == "duplicate"
    [letter] = _letters(deps)
    stored = letter.request
    assert (stored["size"], stored["size_known"], stored["truncated"]) == (len(body), True, True)
    assert len(stored["body"]) == dead_letters.OVERSIZED_PREFIX
    with deps.ledger.reading() as tx:
        [listed] = dead_letters.listing(tx)
        assert "request" in inspect(listed).unloaded
