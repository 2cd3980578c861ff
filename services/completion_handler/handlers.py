"""Receive `training.completed`: fail the run, or move it to `evaluating` and evaluate after commit.

The trainer reports every job (id `training-completed-<run_id>`), and the job-launcher's
reconcile reports jobs that died without reporting; so one run may hear of its end
more than once, late, or from two sources. The run's state is the fence: only a run
in `training` accepts a completion. Anything later is acknowledged with no effect: no
second evaluation, no second model version, no alias change.

The evaluation itself takes seconds, so it never runs inside this transaction (that
would hold SQLite's one write lock against every service): this handler commits the
`evaluating` state with what the trainer reported, and an after-commit action
evaluates (finishing.py). If the process dies in between, reconcile finishes the run.
"""

from __future__ import annotations

from ctflow import states
from ctflow.contracts import TrainingCompleted
from ctflow.handling import HandlerContext, Outcome, Rejected
from ctflow.ledger import runs
from ctflow.ledger.tables import Run
from ctflow.topology import COMPLETION_HANDLER

from . import lease

# A completion for a run in these states is not a repeat (its training never began): "ignored".
_NOT_YET_TRAINING = frozenset({states.REQUESTED, states.QUEUED, states.SUPERSEDED})


def on_training_completed(ctx: HandlerContext) -> Outcome:
    done = ctx.payload_as(TrainingCompleted)
    if ctx.event.subject and ctx.event.subject != done.run_id:
        raise Rejected(f"event subject {ctx.event.subject!r} and data.run_id {done.run_id!r} name different runs")
    run = runs.get(ctx.tx, done.run_id, for_update=True)
    if run is None:
        raise Rejected(f"training.completed for run {done.run_id!r}, which the ledger does not know")
    if run.pipeline != done.pipeline:
        raise Rejected(
            f"training.completed says run {run.id} belongs to pipeline {done.pipeline!r}; "
            f"the ledger says {run.pipeline!r}"
        )
    runs.note_event(ctx.tx, run.id, "received", ctx.event, COMPLETION_HANDLER)
    ctx.touched(run.id)
    if run.state != states.TRAINING:  # the fence: only a training run takes a completion
        status = "ignored" if run.state in _NOT_YET_TRAINING else "duplicate"
        return Outcome(
            status, f"run {run.id} is {run.state}, not training; {ctx.event.id} from {ctx.event.source} changes nothing"
        )

    if done.metrics:
        run.metrics = dict(done.metrics)
    if done.status == "failed":
        return _fail(ctx, run, _failure_reason(done.error))
    if not done.mlflow_run_id:
        return _fail(ctx, run, "training reported success without an MLflow run id: there is no model to evaluate")
    run.mlflow_run_id = done.mlflow_run_id
    run.evaluation = lease.pending(
        {
            "job_id": done.job_id,
            "model_dir": done.model_dir,
            "artifact_uri": done.artifact_uri,
            "mlflow_model_uri": done.mlflow_model_uri,
            "epochs_completed": done.epochs_completed,
            "resumed_from_epoch": done.resumed_from_epoch,
        }
    )
    runs.transition(ctx.tx, run, states.EVALUATING, COMPLETION_HANDLER)
    deps, run_id = ctx.deps, run.id

    def evaluate() -> None:
        from .finishing import finish

        finish(deps, run_id)

    ctx.after_commit(evaluate)
    return Outcome("processed", f"run {run.id} trained; evaluating model from MLflow run {done.mlflow_run_id}")


def _fail(ctx: HandlerContext, run: Run, reason: str) -> Outcome:
    runs.transition(ctx.tx, run, states.FAILED, COMPLETION_HANDLER, reason=reason)
    return Outcome("processed", f"run {run.id} failed: {reason}")


def _failure_reason(error: str | None) -> str:
    error = (error or "").strip() or "the trainer reported failure without saying why"
    return error if error.startswith("training failed") else f"training failed: {error}"
