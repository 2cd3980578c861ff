"""An event whose handling fails every time (a bug, an input the code cannot cope with) ends as a
dead letter with the error, after a bounded number of attempts, on SQLite and PostgreSQL.

Until then each failure is transient: rolled back and answered 5xx for the sender to retry,
since most clear up. The count is kept per consumer and event in the ledger, so it holds
across processes and redeliveries.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from ctflow.events import Event, to_http_binary
from ctflow.handling import HandlerContext, Handling, Outcome
from ctflow.intake import Intake
from ctflow.ledger import runs
from ctflow.ledger.tables import DeadLetter, DeliveryFailure, Run
from ctflow.service import forget_settled_failures
from tests.support import push_request, replaying

EVENT_TYPE = "test.failing.v1"


class FailsOn:
    """A handler that creates a run per event, and raises for the events named in `failing`."""

    def __init__(self, *failing: str) -> None:
        self.failing = set(failing)
        self.calls = 0

    def __call__(self, ctx: HandlerContext) -> Outcome:
        self.calls += 1
        runs.create(
            ctx.tx, run_id=ctx.event.id, pipeline="digits", trigger={"kind": "test"}, hyperparameters={}, service="test"
        )
        if ctx.event.id in self.failing:
            raise ValueError(f"cannot cope with {ctx.event.id}\x00")
        return Outcome("processed")


def _request(event_id: str) -> tuple[dict[str, str], bytes]:
    return to_http_binary(Event(type=EVENT_TYPE, source="//test", id=event_id, data={"n": 1}))


def _letters(deps) -> list[DeadLetter]:  # type: ignore[no-untyped-def]
    with deps.ledger.reading() as tx:
        return list(tx.scalars(select(DeadLetter)))


def _run_ids(deps) -> set[str]:  # type: ignore[no-untyped-def]
    with deps.ledger.reading() as tx:
        return set(tx.scalars(select(Run.id)))


def test_an_event_failing_every_time_is_a_dead_letter_with_the_error_after_the_limit(deps):
    handler = FailsOn("poison")
    intake = Intake("test-consumer", {EVENT_TYPE: handler}, deps)
    limit = deps.settings.max_handling_failures
    headers, body = _request("poison")
    for _ in range(limit - 1):
        with pytest.raises(ValueError, match="cannot cope with poison"):
            intake.receive(headers, body)
        assert _letters(deps) == [] and _run_ids(deps) == set()  # rolled back, for the sender to retry
    outcome = intake.receive(headers, body)
    assert outcome.status == "rejected"
    assert f"handling failed {limit} times in a row" in outcome.detail
    assert "ValueError: cannot cope with poison\\x00" in outcome.detail  # a NUL PostgreSQL could not keep
    [letter] = _letters(deps)
    assert (letter.event_id, letter.event_type, letter.reason) == ("poison", EVENT_TYPE, outcome.detail)
    assert letter.request["body"] == body.decode()
    assert intake.receive(headers, body).status == "duplicate"  # the sender's next redelivery
    assert handler.calls == limit and _run_ids(deps) == set()
    with deps.ledger.reading() as tx:
        assert tx.scalar(select(DeliveryFailure)) is None  # a replay starts counting afresh

    assert intake.receive(*_request("healthy")).status == "processed"  # others were never affected
    handler.failing.clear()  # the cause is fixed
    with replaying(deps, letter.id):
        replayed = intake.receive(headers, body, replay_of=letter.id)
    assert replayed.status == "processed" and _run_ids(deps) == {"healthy", "poison"}


def test_failures_that_clear_up_leave_no_dead_letter(deps):
    handler = FailsOn("flaky")
    intake = Intake("test-consumer", {EVENT_TYPE: handler}, deps)
    headers, body = _request("flaky")
    for _ in range(deps.settings.max_handling_failures - 1):
        with pytest.raises(ValueError):
            intake.receive(headers, body)
    handler.failing.clear()
    assert intake.receive(headers, body).status == "processed"
    assert _letters(deps) == [] and _run_ids(deps) == {"flaky"}
    with pytest.raises(ValueError):  # another event, still failing: its count is kept
        Intake("test-consumer", {EVENT_TYPE: FailsOn("other")}, deps).receive(*_request("other"))

    assert forget_settled_failures(deps) == {"failure_counts_forgotten": 1}  # a reconcile tick
    with deps.ledger.reading() as tx:
        assert [(f.event_id, f.attempts) for f in tx.scalars(select(DeliveryFailure))] == [("other", 1)]


def test_a_prepare_step_failing_every_time_is_counted_the_same_way(deps):
    """A handler's read-only `prepare` (reading the bucket) runs before its transaction; it is counted too."""

    def unreadable(deps, event):  # type: ignore[no-untyped-def]
        raise OSError(f"cannot read the manifest of {event.id}")

    handler = FailsOn()
    intake = Intake("test-consumer", {EVENT_TYPE: Handling(handler, prepare=unreadable)}, deps)
    headers, body = _request("unreadable")
    for _ in range(deps.settings.max_handling_failures - 1):
        with pytest.raises(OSError):
            intake.receive(headers, body)
    outcome = intake.receive(headers, body)
    assert outcome.status == "rejected" and "OSError: cannot read the manifest of unreadable" in outcome.detail
    assert handler.calls == 0 and len(_letters(deps)) == 1


def test_failures_are_counted_per_consumer(deps):
    """Two services that fail on the same event count apart: each keeps its own dead letter."""
    first = Intake("first-consumer", {EVENT_TYPE: FailsOn("poison")}, deps)
    second = Intake("second-consumer", {EVENT_TYPE: FailsOn("poison")}, deps)
    headers, body = _request("poison")
    for _ in range(deps.settings.max_handling_failures - 1):
        for intake in (first, second):
            with pytest.raises(ValueError):
                intake.receive(headers, body)
    assert [intake.receive(headers, body).status for intake in (first, second)] == ["rejected", "rejected"]
    assert sorted(letter.consumer for letter in _letters(deps)) == ["first-consumer", "second-consumer"]


def test_a_failing_service_answers_503_then_keeps_the_message_as_a_dead_letter(deps, consumer, monkeypatch):
    """Over HTTP, as Pub/Sub sees it: 5xx (retry) while attempts remain, then 2xx with the dead letter."""

    def broken(name: str):  # type: ignore[no-untyped-def]
        raise KeyError(f"pipeline index corrupt at {name}")

    monkeypatch.setattr(deps.pipelines, "get", broken)
    headers, body = push_request({"pipeline": "digits", "hyperparameters": {"lr": 0.01}}, "msg-poison")
    answers = [consumer.post("/", content=body, headers=headers) for _ in range(deps.settings.max_handling_failures)]
    assert [a.status_code for a in answers] == [503] * (len(answers) - 1) + [200]
    assert answers[-1].json()["status"] == "rejected"
    [letter] = _letters(deps)
    assert "KeyError" in letter.reason and "pipeline index corrupt at digits" in letter.reason
    assert consumer.post("/", content=body, headers=headers).json()["status"] == "duplicate"


def test_the_database_being_unavailable_is_never_counted_against_the_event(deps):
    """A lost connection, a lock or a serialization conflict is the database's trouble: retried for as
    long as the sender retries, never a dead letter however often it happens."""

    def conflict(ctx: HandlerContext) -> Outcome:
        raise OperationalError("UPDATE runs …", {}, Exception("could not serialize access"))

    intake = Intake("test-consumer", {EVENT_TYPE: conflict}, deps)
    headers, body = _request("unlucky")
    for _ in range(deps.settings.max_handling_failures + 2):
        with pytest.raises(OperationalError):
            intake.receive(headers, body)
    assert _letters(deps) == []
    with deps.ledger.reading() as tx:
        assert tx.scalar(select(DeliveryFailure)) is None
