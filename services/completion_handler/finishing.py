"""Finish a run in `evaluating`: claim its lease, assess it, record the verdict in a second transaction.

Called after the handler's transaction commits (`after_commit`) and by the reconcile
step for runs a crash left in `evaluating`; the lease (lease.py) makes sure only one
of them works on a run at a time. Outcomes:

- verdict passed -> run `registered` with its model version, `model.registered` emitted;
- verdict failed -> run `rejected` with the gate's reasons, `model.rejected` emitted;
- the run cannot be evaluated (`EvaluationError`: holdout missing or altered, model
  files missing, lineage inconsistent) -> run `failed` with the reason;
- anything else (MLflow or the bucket unreachable, a locked database) is transient:
  the lease is given back with the error noted, and the next reconcile tick retries.

Events go through the outbox exactly as a handler's do (`intake.service_work`), published
right after commit and again by reconcile until sent.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from ctflow import events, failpoints, logs, states
from ctflow.deps import Dependencies
from ctflow.handling import service_work
from ctflow.ledger import runs
from ctflow.ledger.records import EvaluationRecord
from ctflow.ledger.tables import utcnow
from ctflow.registry import model_name
from ctflow.topology import COMPLETION_HANDLER

from . import lease

if TYPE_CHECKING:
    from .assessment import Assessment

log = logging.getLogger(__name__)
RECONCILE_BATCH = 20


def finish(deps: Dependencies, run_id: str, *, now: datetime | None = None) -> str | None:
    """Evaluate one run if its lease is free; returns the state it ended in (None: not ours to do)."""
    with deps.ledger.transaction() as tx:
        task = lease.claim(tx, run_id, now or utcnow())
    if task is None:
        return None
    failpoints.hit("completion-evaluating")  # crash tests: die holding the lease
    from .assessment import assess
    from .evaluation import EvaluationError

    try:
        try:
            assessment = assess(deps, task)
        except EvaluationError as exc:
            return _record(deps, task, states.FAILED, reason=f"evaluation failed: {exc}")
        return _record_verdict(deps, task, assessment)
    except Exception as exc:
        _give_back(deps, task, exc)
        raise


def _record_verdict(deps: Dependencies, task: lease.EvaluationTask, assessment: Assessment) -> str | None:
    verdict = assessment.verdict
    data = {
        "run_id": task.run_id,
        "pipeline": task.pipeline,
        "metrics": assessment.challenger.scalars(),
        "champion_version": assessment.champion_version,
    }
    if assessment.version is not None:  # the verdict passed and the version exists
        data.update(model_name=model_name(task.pipeline), model_version=assessment.version.version)
        event = events.run_event(
            events.MODEL_REGISTERED, COMPLETION_HANDLER, task.run_id, data, event_id=f"model-registered-{task.run_id}"
        )
        return _record(
            deps,
            task,
            states.REGISTERED,
            summary=assessment.summary(),
            event=event,
            model_version=assessment.version.version,
        )
    event = events.run_event(
        events.MODEL_REJECTED,
        COMPLETION_HANDLER,
        task.run_id,
        {**data, "reasons": list(verdict.reasons)},
        event_id=f"model-rejected-{task.run_id}",
    )
    return _record(
        deps, task, states.REJECTED, summary=assessment.summary(), event=event, reason="; ".join(verdict.reasons)
    )


def _give_back(deps: Dependencies, task: lease.EvaluationTask, exc: Exception) -> None:
    """Release the lease after a transient failure so the next reconcile tick retries at once
    (if even that fails, the lease expires on its own)."""
    try:
        with deps.ledger.transaction() as tx:
            lease.release(tx, task, f"{type(exc).__name__}: {exc}")
    except Exception:  # noqa: BLE001 - the original failure is what the caller reports
        log.exception("could not release the evaluation lease of run %s", task.run_id)


def _record(
    deps: Dependencies,
    task: lease.EvaluationTask,
    target: str,
    *,
    summary: EvaluationRecord | None = None,
    event: events.Event | None = None,
    reason: str | None = None,
    model_version: str | None = None,
) -> str | None:
    with service_work(deps, COMPLETION_HANDLER, "record-verdict") as ctx:
        run = lease.holder(ctx.tx, task)
        if run is None:  # the lease expired and another worker took the run over: its result stands
            log.warning("run %s: lease lost during evaluation; leaving the result to its new holder", task.run_id)
            return None
        lease.done(ctx.tx, task)
        previous = run.evaluation
        run.evaluation = {
            **(summary or {"status": "failed"}),
            "completion": previous.get("completion") if previous else None,
            "attempts": previous.get("attempts") if previous else None,
        }
        if model_version is not None:
            run.model_version = model_version
        runs.transition(
            ctx.tx,
            run,
            target,
            COMPLETION_HANDLER,
            reason=reason,
            detail={"model_version": model_version} if model_version else None,
        )
        if event is not None:
            ctx.emit(event)
    log.info("run %s is %s", task.run_id, target, extra=logs.fields(reason=reason, model_version=model_version))
    return target


def finish_stuck(deps: Dependencies, *, now: datetime | None = None) -> dict[str, int]:
    """Reconcile step: finish runs left in `evaluating` whose lease is free (never taken or expired)."""
    with deps.ledger.transaction() as tx:
        waiting = runs.ids_in(tx, states.EVALUATING, limit=RECONCILE_BATCH)
    finished = failed = 0
    for run_id in waiting:
        try:
            finished += finish(deps, run_id, now=now) is not None
        except Exception:  # noqa: BLE001 - one run's transient failure must not starve the others
            failed += 1
            log.exception("evaluating run %s failed; the next reconcile tick retries", run_id)
    return {"evaluations_finished": finished, "evaluations_failed": failed}
