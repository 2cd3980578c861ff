"""Receive `model.registered`: begin the version's rollout into the pipeline's environment.

One rollout per version and environment (the ledger row is unique on them, and its id is
derived from them), so a registration delivered three times at once makes one rollout.
A newer version supersedes a rollout still under way: that rollout is marked, and its
next tick sends its traffic back to stable before the newer one moves any (rollouts of
one environment act one at a time, oldest first). A version no newer than what serves
is acknowledged and changes nothing.
"""

from __future__ import annotations

import time

from ctflow import events, states
from ctflow.contracts import ModelRegistered
from ctflow.handling import HandlerContext, Outcome, Rejected
from ctflow.ledger import rollouts, runs
from ctflow.topology import DEPLOYER

from .plan import plan_of
from .progress import begin

# One environment until environments arrive (issue 12); the data model, API and events carry it already.
PRODUCTION = "production"


def on_model_registered(ctx: HandlerContext) -> Outcome:
    registered = ctx.payload_as(ModelRegistered)
    spec = ctx.deps.pipelines.get(registered.pipeline)
    if spec is None:
        raise Rejected(f"model.registered for pipeline {registered.pipeline!r}, which has no spec")
    if not registered.model_version.isdigit():
        raise Rejected(f"model version {registered.model_version!r} is not a registry version number")
    run = runs.get(ctx.tx, registered.run_id, for_update=True)
    if run is None:
        raise Rejected(f"model.registered for run {registered.run_id!r}, which the ledger does not know")
    runs.note_event(ctx.tx, run.id, "received", ctx.event, DEPLOYER)
    ctx.touched(run.id)
    environment, version = PRODUCTION, registered.model_version
    serving = rollouts.serving(ctx.tx, spec.name, environment)
    if serving is not None and int(version) <= int(serving.candidate_version):
        return Outcome(
            "ignored", f"version {version} is not newer than version {serving.candidate_version}, which serves"
        )
    stable_revision = ((serving.serving or {}).get("revision") or {}).get("name") if serving else None
    rollout_id = begin(
        ctx.tx,
        pipeline=spec.name,
        environment=environment,
        candidate=version,
        stable=serving.candidate_version if serving else None,
        run_id=run.id,
        plan=plan_of(spec.serving),
        now=time.time(),
    )
    if rollout_id is None:
        return Outcome("duplicate", f"version {version} already has its rollout into {environment}")
    row = rollouts.get(ctx.tx, rollout_id)
    assert row is not None
    row.serving = {"service": spec.serving.service, "revision": None, "stable_revision": stable_revision}
    for older in rollouts.active(ctx.tx, spec.name, environment):
        if older.id != rollout_id and int(older.candidate_version) < int(version):
            older.superseded_by = version
    run.rollout_id = rollout_id
    if run.state == states.REGISTERED:
        runs.transition(ctx.tx, run, states.ROLLING_OUT, DEPLOYER)
    stable = f"version {serving.candidate_version} serves" if serving else "nothing serves yet"
    ctx.emit(
        events.run_event(
            events.ROLLOUT_STARTED,
            DEPLOYER,
            run.id,
            {
                "run_id": run.id,
                "pipeline": spec.name,
                "environment": environment,
                "rollout_id": rollout_id,
                "model_version": version,
                "stable_version": serving.candidate_version if serving else None,
                "revision": "",
                "phase": "readying",
                "traffic_percent": 0,
                "reason": f"version {version} registered; {stable}",
            },
            event_id=f"rollout-started-{rollout_id}",
        )
    )
    # Packaging and the canary's start are the reconcile tick's (deployer.rollout), not this delivery's.
    return Outcome("processed", f"rollout {rollout_id} of version {version} into {environment} begun")
