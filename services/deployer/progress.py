"""A rollout in the ledger, one tick at a time: begin it, then read its state, decide, keep the state and the decision.

What the deployer's handler and reconcile step will call (issue 10): the decision itself
is pure (deployer.decide); this is the one place that loads it from and saves it to the
ledger (ctflow.ledger.rollouts), inside the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from ctflow.ledger import rollouts
from ctflow.ledger.tables import RolloutRow

from .decide import Action, Decision, Observation, Plan, State, decide, start, state_from_json, state_to_json
from .plan import plan_from_json, plan_to_json


def begin(
    tx: Session,
    *,
    pipeline: str,
    environment: str,
    candidate: str,
    stable: str | None,
    run_id: str | None,
    plan: Plan,
    now: float,
) -> str | None:
    """Create the rollout of `candidate` into `environment`; its id, or None when it already has one."""
    return rollouts.create(
        tx,
        pipeline=pipeline,
        environment=environment,
        candidate_version=candidate,
        stable_version=stable,
        run_id=run_id,
        plan=plan_to_json(plan),
        state=state_to_json(start(candidate, stable, now)),
    )


@dataclass(frozen=True)
class Tick:
    """What one tick did to a rollout: the state before and after, the actions to carry out, the decision kept."""

    row: RolloutRow
    before: State
    after: State
    actions: list[Action]
    decision: Decision


def advance(tx: Session, rollout_id: str, seen: Observation) -> Tick | None:
    """One tick: the rollout locked, decided on under the plan it began with, its state and decision kept.

    None when there is no such rollout.
    """
    row = rollouts.get(tx, rollout_id, for_update=True)
    if row is None:
        return None
    before = state_from_json(row.state)
    state, actions, decision = decide(before, plan_from_json(row.plan), seen)
    keep(tx, row, state, decision)
    return Tick(row, before, state, actions, decision)


def keep(tx: Session, row: RolloutRow, state: State, decision: Decision) -> None:
    """The rollout's new state and the decision that led to it."""
    rollout_id = row.id
    rollouts.save(tx, row, state_to_json(state))
    rollouts.record(
        tx,
        rollout_id,
        at=datetime.fromtimestamp(decision.at, UTC),
        phase=decision.phase,
        weight=decision.weight,
        verdict=decision.verdict,
        reason=decision.reason,
        figures=decision.figures,
    )
