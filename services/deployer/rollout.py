"""The deployer's reconcile tick: for each rollout, finish what the last tick left, observe, decide, act.

One tick of one rollout, under its lease (`rollout:<id>`, so two deployer instances never
act on one rollout at once):

1. Actions a crash left undone (`pending`, kept with their decision) are carried out.
2. A rollout that has ended has nothing more to do.
3. Rollouts of one environment act one at a time, oldest first: a newer one waits until
   the one it supersedes has sent its traffic back to stable.
4. The canary revision: packaged once (deployer.packaging), then created (idempotent).
5. Observe: is the canary ready, its smoke test (run once, when it first is), each
   revision's figures over the current window, a person's command, a newer version.
6. Decide (deployer.decide, pure) and keep the state, the decision with its figures and
   the actions to carry out, with the events of the transition, in one transaction.
7. Carry out the actions (deployer.acting); then clear them. A refused compare-and-swap
   of the champion ends the rollout in a recorded conflict, traffic back to stable.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ctflow import events, states
from ctflow.handling import HandlerContext, Rejected, service_work
from ctflow.ledger import leases, rollouts, runs
from ctflow.ledger.tables import RolloutRow
from ctflow.states import ROLLOUT_FINAL
from ctflow.topology import DEPLOYER

from . import decide as d
from .acting import ChampionMoved, Target, carry_out, check_champion
from .packaging import package
from .plan import plan_from_json
from .progress import Tick, advance, keep
from .traffic import holdout_instances, smoke_test

if TYPE_CHECKING:
    from ctflow.deps import Dependencies

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=2)  # longer than a tick's slowest step (packaging a model)
FINAL_RUN_STATE = {
    "promoted": states.PROMOTED,
    "rolled_back": states.ROLLED_BACK,
    "conflict": states.ROLLED_BACK,
    "superseded": states.SUPERSEDED,
}
PHASE_EVENT = {
    "promoted": events.ROLLOUT_PROMOTED,
    "rolled_back": events.ROLLOUT_ROLLED_BACK,
    "superseded": events.ROLLOUT_SUPERSEDED,
    "conflict": events.ROLLOUT_CONFLICT,
    "paused": events.ROLLOUT_PAUSED,
}


def advance_rollouts(deps: Dependencies) -> dict[str, Any]:
    """The reconcile step: one tick of every rollout that has something to do."""
    with deps.ledger.reading() as tx:
        ids = rollouts.needing_work(tx)
    report: dict[str, Any] = {"rollouts_ticked": 0}
    for rollout_id in ids:
        try:
            outcome = tick(deps, rollout_id)
        except Exception:  # noqa: BLE001 - one rollout's trouble must not stall the others
            log.exception("the tick of rollout %s failed; the next tick tries again", rollout_id)
            outcome = "failed"
        report["rollouts_ticked"] += 1
        report[rollout_id] = outcome
    return report


def tick(deps: Dependencies, rollout_id: str) -> str:
    """One tick of one rollout; a word on what it did."""
    with deps.ledger.transaction() as tx:
        lease = leases.claim(tx, f"rollout:{rollout_id}", duration=LEASE)
    if lease is None:
        return "busy"  # another tick (another instance) has it
    try:
        return _tick(deps, rollout_id, lease)
    finally:
        with deps.ledger.transaction() as tx:
            leases.release(tx, lease)


def _tick(deps: Dependencies, rollout_id: str, lease: leases.Lease) -> str:
    with deps.ledger.reading() as tx:
        row = rollouts.get(tx, rollout_id)
        if row is None:
            return "gone"
        snapshot = _Snapshot(row)
        waiting_for = [
            r.id for r in rollouts.active(tx, row.pipeline, row.environment) if r.created_at < row.created_at
        ]
    if snapshot.pending:
        _carry_out(deps, snapshot, [d.action_from_json(a) for a in snapshot.pending], lease)
        snapshot = _reread(deps, rollout_id)
    if snapshot.phase in ROLLOUT_FINAL:
        return snapshot.phase
    if waiting_for and snapshot.superseded_by is None:
        return f"waiting for {', '.join(waiting_for)}"
    target = snapshot.target
    if target.canary is None and snapshot.superseded_by is None and snapshot.command_name != "abort":
        try:
            revision = package(deps, pipeline=snapshot.pipeline, service=target.service, version=snapshot.version)
        except Rejected as exc:
            return _end_unpackaged(deps, snapshot, str(exc), lease)
        with deps.ledger.transaction() as tx:
            locked = rollouts.get(tx, rollout_id, for_update=True)
            assert locked is not None
            locked.serving = {**(locked.serving or {}), "revision": revision.to_json()}
        snapshot = _reread(deps, rollout_id)
        target = snapshot.target
    if target.canary is not None and snapshot.phase not in ROLLOUT_FINAL:
        deps.serving.create_revision(target.service, target.canary)
    seen, smoke = _observe(deps, snapshot)
    with service_work(deps, DEPLOYER, f"rollout-{rollout_id}") as ctx:
        if not leases.holds(ctx.tx, lease):
            return "lease lost"
        done = advance(ctx.tx, rollout_id, seen)
        assert done is not None
        _keep_tick(ctx, done, smoke, consumed_command=seen.command is not None)
    if done.actions:
        _carry_out(deps, _reread(deps, rollout_id), done.actions, lease)
    return done.after.phase


class _Snapshot:
    """A rollout row as read at the start of a tick (the row itself belongs to its session)."""

    def __init__(self, row: RolloutRow) -> None:
        self.id, self.pipeline, self.environment = row.id, row.pipeline, row.environment
        self.version, self.run_id, self.phase = row.candidate_version, row.run_id, row.phase
        self.state = d.state_from_json(row.state)
        self.plan = plan_from_json(row.plan)
        self.serving: dict[str, Any] = dict(row.serving or {"service": "", "revision": None})
        self.pending = list(row.pending or [])
        self.command = dict(row.command) if row.command else None
        self.superseded_by = row.superseded_by

    @property
    def target(self) -> Target:
        return Target.of(self.pipeline, self.serving)

    @property
    def command_name(self) -> str | None:
        return self.command["command"] if self.command else None


def _reread(deps: Dependencies, rollout_id: str) -> _Snapshot:
    with deps.ledger.reading() as tx:
        row = rollouts.get(tx, rollout_id)
        assert row is not None
        return _Snapshot(row)


def _observe(deps: Dependencies, snap: _Snapshot) -> tuple[d.Observation, dict[str, Any] | None]:
    """What the decision needs to know now; and the smoke test's result when this tick ran it."""
    now, target, state = time.time(), snap.target, snap.state
    command = snap.command_name
    seen: dict[str, Any] = {
        "now": now,
        "command": command,
        "command_by": snap.command["by"] if snap.command else "",
        "superseded_by": snap.superseded_by,
    }
    if target.canary is None:
        return d.Observation(**seen), None
    serving = deps.serving
    seen["canary_ready"] = ready = serving.ready(target.service, target.canary.name)
    smoke = snap.serving.get("smoke")
    if ready and smoke is None and state.phase == "readying":
        spec = deps.pipelines.get(snap.pipeline)
        samples = holdout_instances(deps, spec) if spec else []
        url = serving.prediction_url(target.service, snap.pipeline, target.canary.name)
        result = smoke_test(url, target.canary.probe, samples)
        smoke = {"passed": result.passed, "detail": result.detail}
        ran: dict[str, Any] | None = smoke
    else:
        ran = None
    seen["smoke_passed"] = smoke["passed"] if smoke else None
    if state.phase == "analysing":
        # Judged on complete figures only: a window counts as over once the backend's data is complete up to
        # its end (Cloud Monitoring's lags by minutes; the embedded router's not at all).
        now = seen["complete_until"] = now - serving.metrics_delay_seconds
        since = state.window_started_at
        canary = serving.figures(target.service, target.canary.name, since, now)
        seen["canary"] = d.Figures(canary.requests, canary.server_errors, canary.p95_ms)
        if target.stable_revision is not None:
            stable = serving.figures(target.service, target.stable_revision, since, now)
            seen["stable"] = d.Figures(stable.requests, stable.server_errors, stable.p95_ms)
    if ran is not None:  # the smoke test took a while: what follows (a traffic change, a window) starts now
        seen["now"] = time.time()
    return d.Observation(**seen), ran


def _keep_tick(ctx: HandlerContext, done: Tick, smoke: dict[str, Any] | None, *, consumed_command: bool) -> None:
    row = done.row
    if smoke is not None:
        row.serving = {**(row.serving or {}), "smoke": smoke}
    if consumed_command:
        row.command = None
    row.pending = [d.action_to_json(a) for a in done.actions] or None
    _announce(ctx, row, done.before, done.after, done.decision)


def _announce(ctx: HandlerContext, row: RolloutRow, before: d.State, after: d.State, decision: d.Decision) -> None:
    """The transition's event, and the run's state when the rollout ended."""
    if after.phase != before.phase and after.phase in PHASE_EVENT:
        event_type = PHASE_EVENT[after.phase]
    elif before.phase == "paused" and after.phase != "paused":
        event_type = events.ROLLOUT_RESUMED
    elif after.weight != before.weight:
        event_type = events.ROLLOUT_ADVANCED
    else:
        return
    run_id = row.run_id or ""
    revision = ((row.serving or {}).get("revision") or {}).get("name", "")
    data = {
        "run_id": run_id,
        "pipeline": row.pipeline,
        "environment": row.environment,
        "rollout_id": row.id,
        "model_version": row.candidate_version,
        "stable_version": row.stable_version,
        "revision": revision,
        "phase": after.phase,
        "traffic_percent": after.weight,
        "reason": decision.reason,
        "figures": decision.figures,
    }
    ctx.emit(events.run_event(event_type, DEPLOYER, run_id, data))
    if after.phase in FINAL_RUN_STATE and row.run_id:
        run = runs.get(ctx.tx, row.run_id, for_update=True)
        if run is not None and run.state == states.ROLLING_OUT:
            runs.transition(ctx.tx, run, FINAL_RUN_STATE[after.phase], DEPLOYER, reason=decision.reason)


def _carry_out(deps: Dependencies, snap: _Snapshot, actions: list[d.Action], lease: leases.Lease) -> None:
    target = snap.target
    try:
        check_champion(deps, target, actions)
        carry_out(deps, target, actions, budget_seconds=max(1.0, snap.plan.analysis_interval_seconds * 0.6))
    except ChampionMoved as moved:
        _conflict(deps, snap, moved.champion, lease)
        return
    with deps.ledger.transaction() as tx:
        row = rollouts.get(tx, snap.id, for_update=True)
        if row is not None and leases.holds(tx, lease):
            row.pending = None


def _conflict(deps: Dependencies, snap: _Snapshot, champion: str | None, lease: leases.Lease) -> None:
    """The promotion was refused by the registry: end in a recorded conflict, traffic back to stable."""
    with service_work(deps, DEPLOYER, f"rollout-{snap.id}-conflict") as ctx:
        row = rollouts.get(ctx.tx, snap.id, for_update=True)
        if row is None or not leases.holds(ctx.tx, lease):
            return
        before = d.state_from_json(row.state)
        state, actions, decision = d.conflict(before, time.time(), champion)
        keep(ctx.tx, row, state, decision)
        row.pending = [d.action_to_json(a) for a in actions]
        _announce(ctx, row, before, state, decision)
    _carry_out(deps, _reread(deps, snap.id), actions, lease)


def _end_unpackaged(deps: Dependencies, snap: _Snapshot, reason: str, lease: leases.Lease) -> str:
    """The version cannot be served (its model files do not make an archive): roll back before any traffic."""
    with service_work(deps, DEPLOYER, f"rollout-{snap.id}-unpackaged") as ctx:
        row = rollouts.get(ctx.tx, snap.id, for_update=True)
        if row is None or not leases.holds(ctx.tx, lease):
            return "lease lost"
        before = d.state_from_json(row.state)
        state, _, decision = d.give_up(before, time.time(), reason)
        keep(ctx.tx, row, state, decision)
        _announce(ctx, row, before, state, decision)
    return "rolled_back"
