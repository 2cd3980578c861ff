"""Rollouts in the ledger (ctflow.ledger.rollouts, through deployer.progress), on SQLite and PostgreSQL: one per
version and environment however often its registration arrives, the decision state kept whole, every tick's
decision appended."""

from __future__ import annotations

import threading

from ctflow.contracts import ServingSpec
from ctflow.ledger import Ledger, rollouts
from deployer.decide import Figures, Observation, SetTraffic, StopCanary, state_from_json
from deployer.plan import plan_from_json, plan_of
from deployer.progress import advance, begin

PLAN = plan_of(ServingSpec(service="digits-model"))


def _ledger(ledger_url: str) -> Ledger:
    ledger = Ledger(ledger_url)
    ledger.migrate()
    return ledger


def _begin(ledger: Ledger, version: str = "4") -> str | None:
    with ledger.transaction() as tx:
        return begin(
            tx,
            pipeline="digits",
            environment="production",
            candidate=version,
            stable="3",
            run_id=f"digits-run-{version}",
            plan=PLAN,
            now=1000.0,
        )


def test_concurrent_registrations_make_one_rollout(ledger_url):
    """Three deliveries of one model.registered at once: one rollout; the others find it there."""
    ledger = _ledger(ledger_url)
    barrier, made = threading.Barrier(3), []

    def register() -> None:
        barrier.wait()
        made.append(_begin(ledger))

    threads = [threading.Thread(target=register) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(made, key=str) == [None, None, "digits-production-v4"]
    with ledger.reading() as tx:
        [row] = rollouts.listing(tx, pipeline="digits")
        assert row.id == "digits-production-v4" and plan_from_json(row.plan) == PLAN
    ledger.dispose()


def test_the_decision_state_and_every_decision_are_kept(ledger_url):
    """Each tick in its own transaction, as a deployer restarted between any two would run them: the state
    resumes where it was, decisions are kept in order with their figures, a final phase ends the rollout."""
    ledger = _ledger(ledger_url)
    rollout = _begin(ledger)
    assert rollout is not None
    failing, stable = Figures(200, 80, 20.0), Figures(1000, 1, 18.0)
    ticks = [
        Observation(now=1001.0, canary_ready=True, smoke_passed=True),
        Observation(now=1100.0, canary=failing, stable=stable),
        Observation(now=1200.0, canary=failing, stable=stable),
    ]
    actions = []
    for seen in ticks:
        with ledger.transaction() as tx:
            done = advance(tx, rollout, seen)
            assert done is not None
            actions.append(done.actions)
    assert actions == [[SetTraffic(10)], [], [SetTraffic(0), StopCanary()]]
    with ledger.reading() as tx:
        row = rollouts.get(tx, rollout)
        assert state_from_json(row.state).phase == "rolled_back" and row.phase == "rolled_back"
        assert row.ended_at is not None
        kept = rollouts.decisions(tx, rollout)
        expected = [("analysing", None), ("analysing", "failed"), ("rolled_back", "failed")]
        assert [(d.phase, d.verdict) for d in kept] == expected
        assert kept[-1].figures["canary_error_rate"] == 0.4 and "2 failed windows in a row" in kept[-1].reason
        assert kept[-1].at.timestamp() == 1200.0
        assert rollouts.active(tx, "digits", "production") == []
        assert advance(tx, "digits-production-v99", ticks[0]) is None
    ledger.dispose()


def test_active_rollouts_are_the_unfinished_ones_of_that_environment(ledger_url):
    ledger = _ledger(ledger_url)
    _begin(ledger, "4")
    _begin(ledger, "5")
    with ledger.transaction() as tx:
        assert [r.candidate_version for r in rollouts.active(tx, "digits", "production")] == ["4", "5"]
        assert rollouts.active(tx, "digits", "staging") == []
        assert len(rollouts.listing(tx, phase="readying")) == 2
    ledger.dispose()
