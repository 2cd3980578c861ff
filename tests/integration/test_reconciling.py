"""Reconcile steps at their own pace (ctflow.reconciling), on SQLite and PostgreSQL: every-tick steps run on
every tick, a step with an interval runs when it is due wherever the tick lands, a failing step is reported
and does not stop the others."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from ctflow import bootstrap
from ctflow.ledger.tables import utcnow
from ctflow.reconciling import ReconcileStep, run_due, shortest_interval, step
from ctflow.service import create_service


class Counting:
    def __init__(self, name: str, fails: bool = False) -> None:
        self.__name__, self.calls, self.fails = name, 0, fails

    def __call__(self, deps) -> dict:  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.fails:
            raise RuntimeError(f"{self.__name__} broke")
        return {self.__name__: self.calls}


def test_a_step_with_an_interval_runs_when_due_and_every_tick_steps_always(deps):
    """Ticks 10 s apart: the every-tick step runs each time, the 30 s step on the first tick and 30 s later."""
    outbox, canary = Counting("outbox"), Counting("canary")
    steps = [step(outbox), step(canary, every=lambda settings: 30.0)]
    start = utcnow()
    reports = [run_due(deps, steps, now=start + timedelta(seconds=10 * n)) for n in range(7)]
    assert outbox.calls == 7 and canary.calls == 3  # at 0 s, 30 s and 60 s
    assert reports[1] == {"outbox": 2, "not_due": ["canary"]}
    assert reports[3] == {"outbox": 4, "canary": 2}


def test_processes_sharing_a_ledger_share_a_steps_due_time(deps, settings):
    """Two processes (two Cloud Run instances) ticking at once run an interval step once between them."""
    other = bootstrap.build(settings)
    try:
        canary = Counting("canary")
        steps = [ReconcileStep("canary", canary, lambda settings: 30.0)]
        now = utcnow()
        run_due(deps, steps, now=now)
        run_due(other, steps, now=now + timedelta(seconds=1))
        assert canary.calls == 1
    finally:
        other.ledger.dispose()


def test_a_failing_step_is_reported_and_the_others_still_run(deps):
    """Over HTTP the tick answers 500 naming the failed step, so Cloud Scheduler records a failure."""
    broken, after = Counting("broken", fails=True), Counting("after")
    assert run_due(deps, [step(broken), step(after)]) == {"after": 1, "failed": ["broken"]}
    app = create_service("test-service", takes_events=False, reconcilers=[step(broken), step(after)])
    app.state.deps = deps
    with TestClient(app) as client:
        answer = client.post("/reconcile")
    assert answer.status_code == 500 and answer.json() == {"after": 2, "failed": ["broken"]}


def test_the_embedded_tick_is_as_short_as_the_most_eager_step(settings):
    """The stack's timer ticks at least as often as any step's interval asks."""
    steps = [step(Counting("a")), step(Counting("b"), every=lambda s: 30.0), step(Counting("c"), every=lambda s: 2.0)]
    assert shortest_interval(steps, settings) == 2.0
    assert shortest_interval(steps[:1], settings) is None
