"""How ledger rows are shown: one function per resource, shared by every route that shows it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ctflow.ledger.tables import DeadLetter, RolloutDecision, RolloutRow, Run, TimelineEntry


def run_summary(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "pipeline": run.pipeline,
        "state": run.state,
        "reason": run.reason,
        "trigger": run.trigger,
        "dataset_version": run.dataset_version,
        "model_version": run.model_version,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
    }


def run_detail(run: Run, timeline: list[TimelineEntry]) -> dict[str, Any]:
    return {
        **run_summary(run),
        "dataset": run.dataset,
        "hyperparameters": run.hyperparameters,
        "trace_id": run.trace_id,
        "job": run.job,
        "mlflow_run_id": run.mlflow_run_id,
        "metrics": run.metrics,
        "evaluation": run.evaluation,
        "rollout_id": run.rollout_id,
        "rollout": f"/rollouts/{run.rollout_id}" if run.rollout_id else None,
        "timeline": [
            {
                "at": t.at,
                "kind": t.kind,
                "name": t.name,
                "service": t.service,
                "event_id": t.event_id,
                "detail": t.detail,
            }
            for t in timeline
        ],
    }


def dead_letter(letter: DeadLetter, *, with_request: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": letter.id,
        "consumer": letter.consumer,
        "status": letter.status,
        "reason": letter.reason,
        "event_source": letter.source,
        "event_id": letter.event_id,
        "event_type": letter.event_type,
        "replays": letter.replays,
        "created_at": letter.created_at,
        "updated_at": letter.updated_at,
    }
    if with_request:
        view["request"] = letter.request
    return view


def rollout_summary(row: RolloutRow) -> dict[str, Any]:
    state = row.state
    return {
        "rollout_id": row.id,
        "pipeline": row.pipeline,
        "environment": row.environment,
        "candidate_version": row.candidate_version,
        "stable_version": row.stable_version,
        "run_id": row.run_id,
        "phase": row.phase,
        "weight": state.get("weight", 0),
        "reason": state.get("reason") or None,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "ended_at": row.ended_at,
    }


def rollout_detail(
    row: RolloutRow, decisions: list[RolloutDecision], observed: dict[str, int] | None = None
) -> dict[str, Any]:
    """`observed`: the service's split as the serving backend applies it now (None: not known here)."""
    from ctflow.serving import traffic_split

    steps = row.plan.get("steps") or []
    serving = row.serving or {}
    canary = (serving.get("revision") or {}).get("name")
    return {
        **rollout_summary(row),
        "plan": row.plan,
        "step": {"n": row.state.get("step", 0) + 1, "of": len(steps)} if row.phase == "analysing" else None,
        "desired_weight": row.state.get("weight", 0),
        "service": serving.get("service"),
        "canary_revision": canary,
        "stable_revision": serving.get("stable_revision"),
        "smoke_test": serving.get("smoke"),
        "desired_traffic": traffic_split(canary, serving.get("stable_revision"), row.state.get("weight", 0))
        if row.phase not in ("promoted", "rolled_back", "superseded", "conflict")
        else None,
        "observed_traffic": observed,
        "pending_command": row.command,
        "decisions": [
            {
                "at": d.at,
                "phase": d.phase,
                "weight": d.weight,
                "verdict": d.verdict,
                "reason": d.reason,
                "figures": d.figures,
            }
            for d in decisions
        ],
    }
