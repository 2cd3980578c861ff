"""Rollouts in the ledger (ctflow.ledger.rollouts), on SQLite and PostgreSQL: one per version and environment
however often its registration arrives, the decision state kept whole, every tick's decision appended."""

from __future__ import annotations

import dataclasses
import threading

from ctflow.contracts import ServingSpec
from ctflow.ledger import Ledger, rollouts
from deployer.decide import Figures, Observation, decide, start, state_from_json, state_to_json
from deployer.plan import plan_of

PLAN = plan_of(ServingSpec(service="digits-model"))


def _ledger(ledger_url: str) -> Ledger:
    ledger = Ledger(ledger_url)
    ledger.migrate()
    return ledger


def _create(ledger: Ledger, version: str = "4") -> str | None:
    with ledger.transaction() as tx:
        return rollouts.create(
            tx,
            pipeline="digits",
            environment="production",
            candidate_version=version,
            stable_version="3",
            run_id=f"digits-run-{version}",
            plan=dataclasses.asdict(PLAN),
            state=state_to_json(start(version, "3", now=1000.0)),
        )


def test_concurrent_registrations_make_one_rollout(ledger_url):
    """Three deliveries of one model.registered at once: one rollout; the others find it there."""
    ledger = _ledger(ledger_url)
    barrier, made = threading.Barrier(3), []

    def register() -> None:
        barrier.wait()
        made.append(_create(ledger))

    threads = [threading.Thread(target=register) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(made, key=str) == [None, None, "digits-production-v4"]
    with ledger.reading() as tx:
        assert [r.id for r in rollouts.listing(tx, pipeline="digits")] == ["digits-production-v4"]
    ledger.dispose()


def test_the_decision_state_and_every_decision_are_kept(ledger_url):
    """Tick, save, read back: the state resumes where it was (a killed deployer picks it up); decisions are in order,
    and a final phase ends the rollout."""
    ledger = _ledger(ledger_url)
    rollout = _create(ledger)
    assert rollout is not None
    now = 1000.0
    ticks = [
        Observation(now=now + 1, canary_ready=True, smoke_passed=True),
        Observation(now=now + 100, canary=Figures(200, 80, 20.0), stable=Figures(1000, 1, 18.0)),
        Observation(now=now + 200, canary=Figures(200, 80, 20.0), stable=Figures(1000, 1, 18.0)),
    ]
    for seen in ticks:
        with ledger.transaction() as tx:
            row = rollouts.get(tx, rollout, for_update=True)
            state, _, decision = decide(state_from_json(row.state), PLAN, seen)
            rollouts.save(tx, row, state_to_json(state))
            rollouts.record(
                tx,
                rollout,
                at=row.updated_at,
                phase=decision.phase,
                weight=decision.weight,
                verdict=decision.verdict,
                reason=decision.reason,
                figures=decision.figures,
            )
    with ledger.reading() as tx:
        row = rollouts.get(tx, rollout)
        assert state_from_json(row.state).phase == "rolled_back" and row.phase == "rolled_back"
        assert row.ended_at is not None
        kept = rollouts.decisions(tx, rollout)
        assert [(d.phase, d.verdict) for d in kept] == [
            ("analysing", None),
            ("analysing", "failed"),
            ("rolled_back", "failed"),
        ]
        assert kept[-1].figures["canary_error_rate"] == 0.4 and "2 failed windows in a row" in kept[-1].reason
        assert rollouts.active(tx, "digits", "production") == []
    ledger.dispose()


def test_active_rollouts_are_the_unfinished_ones_of_that_environment(ledger_url):
    ledger = _ledger(ledger_url)
    _create(ledger, "4")
    _create(ledger, "5")
    with ledger.transaction() as tx:
        assert [r.candidate_version for r in rollouts.active(tx, "digits", "production")] == ["4", "5"]
        assert rollouts.active(tx, "digits", "staging") == []
        assert len(rollouts.listing(tx, phase="readying")) == 2
    ledger.dispose()
