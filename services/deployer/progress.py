"""A rollout in the ledger, one tick at a time: begin it, then read its state, decide, keep the state and the decision.

What the deployer's handler and reconcile step will call (issue 10): the decision itself
is pure (deployer.decide); this is the one place that loads it from and saves it to the
ledger (ctflow.ledger.rollouts), inside the caller's transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from ctflow.ledger import rollouts

from .decide import Action, Observation, Plan, decide, start, state_from_json, state_to_json
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


def advance(tx: Session, rollout_id: str, seen: Observation) -> list[Action] | None:
    """One tick: the rollout locked, decided on under the plan it began with, its state and decision kept.

    Returns the actions to carry out after commit; None when there is no such rollout.
    """
    row = rollouts.get(tx, rollout_id, for_update=True)
    if row is None:
        return None
    state, actions, decision = decide(state_from_json(row.state), plan_from_json(row.plan), seen)
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
    return actions
