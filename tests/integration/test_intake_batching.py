"""Group commit in the intake: deliveries queued behind a transaction share the next one.

Sharing a transaction must never show: each delivery gets its own outcome, duplicates
within a batch are still duplicates, and a delivery that fails (rejected, or a
transient error) rolls back only itself: the others are handled again, each alone.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import select

from ctflow.events import Event, to_http_binary
from ctflow.handling import HandlerContext, Outcome, Rejected
from ctflow.intake import Intake
from ctflow.ledger import runs
from ctflow.ledger.tables import DeadLetter, Run
from ctflow.service import create_service
from tests.support import serving

EVENT_TYPE = "test.batched.v1"


class Recorder:
    """A handler that creates one run per event; "hold" waits for the test, "bad" is rejected, "flaky" fails once."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self.release = threading.Event()
        self.transactions: dict[str, list[int]] = {}
        self.flaked = False

    def __call__(self, ctx: HandlerContext) -> Outcome:
        name = ctx.event.id
        self.transactions.setdefault(name, []).append(id(ctx.tx))
        runs.create(
            ctx.tx,
            run_id=f"digits-{name}",
            pipeline="digits",
            trigger={"kind": "test"},
            hyperparameters={},
            service="test",
        )
        if name == "hold":
            self.held.set()
            assert self.release.wait(10)
        if name == "bad":
            raise Rejected("the test says this one is bad")
        if name == "flaky" and not self.flaked:
            self.flaked = True
            raise ConnectionError("ledger hiccup")
        return Outcome("processed")


def _request(name: str) -> tuple[dict[str, str], bytes]:
    return to_http_binary(Event(type=EVENT_TYPE, source="//test/batching", id=name, data={"name": name}))


def _queued(intake: Intake, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(intake._batches._queue) < count and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(intake._batches._queue) == count


def _deliver_behind_a_held_one(deps, names: list[str]) -> tuple[Recorder, dict[str, Outcome]]:  # type: ignore[no-untyped-def]
    """Hold one delivery in its transaction, queue `names` behind it, let go; each name's outcome."""
    recorder = Recorder()
    intake = Intake("test-consumer", {EVENT_TYPE: recorder}, deps)
    with ThreadPoolExecutor(len(names) + 1) as pool:
        first = pool.submit(intake.receive, *_request("hold"))
        assert recorder.held.wait(10)
        others = {}
        for queued, name in enumerate(names, 1):  # one at a time, so the batch holds them in this order
            others[name] = pool.submit(intake.receive, *_request(name))
            _queued(intake, queued)
        recorder.release.set()
        assert first.result(10).status == "processed"
        return recorder, {name: future.result(10) for name, future in others.items()}


def _run_ids(deps) -> list[str]:  # type: ignore[no-untyped-def]
    with deps.ledger.transaction() as tx:
        return sorted(tx.scalars(select(Run.id)))


def test_queued_deliveries_share_one_transaction_and_each_gets_its_outcome(deps):
    recorder, outcomes = _deliver_behind_a_held_one(deps, ["a", "b", "c"])
    assert len({recorder.transactions[name][0] for name in "abc"}) == 1  # one shared transaction
    assert [o.status for o in outcomes.values()] == ["processed"] * 3
    assert _run_ids(deps) == ["digits-a", "digits-b", "digits-c", "digits-hold"]


def test_a_duplicate_within_a_batch_is_a_duplicate(deps):
    recorder = Recorder()
    intake = Intake("test-consumer", {EVENT_TYPE: recorder}, deps)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(intake.receive, *_request("hold"))
        assert recorder.held.wait(10)
        twins = [pool.submit(intake.receive, *_request("twin")) for _ in range(3)]
        _queued(intake, 3)
        recorder.release.set()
        first.result(10)
        statuses = sorted(f.result(10).status for f in twins)
    assert statuses == ["duplicate", "duplicate", "processed"]
    assert recorder.transactions["twin"] == recorder.transactions["twin"][:1]  # handled once
    assert _run_ids(deps) == ["digits-hold", "digits-twin"]


def test_a_rejected_delivery_rolls_back_only_itself(deps):
    """The batch is rolled back and redone one by one: the bad one is a dead letter, the rest are processed."""
    recorder, outcomes = _deliver_behind_a_held_one(deps, ["a", "bad", "c"])
    assert {name: o.status for name, o in outcomes.items()} == {"a": "processed", "bad": "rejected", "c": "processed"}
    assert len(recorder.transactions["a"]) == 2 and recorder.transactions["a"][0] != recorder.transactions["a"][1]
    assert _run_ids(deps) == ["digits-a", "digits-c", "digits-hold"]
    with deps.ledger.transaction() as tx:
        letter = tx.scalars(select(DeadLetter)).one()
    assert (letter.event_id, letter.reason) == ("bad", "the test says this one is bad")


def test_a_transient_failure_in_a_batch_is_retried_alone_and_fails_only_if_it_fails_again(deps):
    """ "flaky" fails once, in the shared transaction; alone it succeeds, and nothing is lost or doubled."""
    _, outcomes = _deliver_behind_a_held_one(deps, ["a", "flaky", "c"])
    assert {o.status for o in outcomes.values()} == {"processed"}
    assert _run_ids(deps) == ["digits-a", "digits-c", "digits-flaky", "digits-hold"]


# ---- the same over HTTP: deliveries wait for their batch on the event loop --------------------------


def _service(recorder: Recorder, deps):  # type: ignore[no-untyped-def]
    return create_service("test-consumer", handlers={EVENT_TYPE: recorder}, reconcilers=(), deps_factory=lambda: deps)


def _post(url: str, name: str) -> httpx.Response:
    headers, body = _request(name)
    return httpx.post(url, content=body, headers=headers, timeout=30)


def test_http_deliveries_queued_behind_a_transaction_share_the_next_one(deps):
    recorder = Recorder()
    app = _service(recorder, deps)
    with serving(app) as url, ThreadPoolExecutor(5) as pool:
        first = pool.submit(_post, url, "hold")
        assert recorder.held.wait(10)
        others = {name: pool.submit(_post, url, name) for name in "abc"}
        _, intake = app.state.warmup._future.result()
        _queued(intake, 3)
        recorder.release.set()
        assert first.result(10).json()["status"] == "processed"
        answers = {name: future.result(10) for name, future in others.items()}
    assert {(a.status_code, a.json()["status"]) for a in answers.values()} == {(200, "processed")}
    assert len({recorder.transactions[name][0] for name in "abc"}) == 1  # one shared transaction
    assert _run_ids(deps) == ["digits-a", "digits-b", "digits-c", "digits-hold"]


def test_an_http_delivery_that_fails_transiently_is_a_503_and_its_redelivery_is_processed(deps):
    """Nothing is committed for the 503: Pub/Sub's redelivery is the first to take effect."""
    recorder = Recorder()
    with serving(_service(recorder, deps)) as url:
        failed = _post(url, "flaky")
        assert (failed.status_code, failed.json()) == (503, {"status": "retry"})
        assert _run_ids(deps) == []
        again = _post(url, "flaky")
    assert (again.status_code, again.json()["status"]) == (200, "processed")
    assert _run_ids(deps) == ["digits-flaky"]
