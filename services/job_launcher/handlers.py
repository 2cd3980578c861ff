"""Training requests and dataset arrivals become training jobs; finished jobs free their slots.

- training.requested (hparam-consumer) and dataset.arrived (dataset-listener) name a run
  that already exists in state `requested`. The run claims a slot and its job launches
  after commit, or it waits in the queue (slots.py). A dataset arrival's hyperparameters
  (the champion's, else the spec's defaults) are chosen at launch (launch.py), outside
  this transaction: asking the registry must not hold the ledger's locks.
- training.completed notes on the run that its job ended (the completion-handler owns the
  run's state from here) and starts the oldest waiting runs of the pipeline.

A request for a run that is past `requested` is a duplicate (a redelivery under another
id); one for a run that does not exist, or of another pipeline, is a dead letter.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from ctflow import states
from ctflow.contracts import DatasetArrived, TrainingCompleted, TrainingRequested
from ctflow.handling import HandlerContext, Outcome, Rejected
from ctflow.ledger import runs
from ctflow.topology import JOB_LAUNCHER

from . import jobs, slots
from .launch import launch_all

if TYPE_CHECKING:
    from ctflow.ledger.tables import Run


def on_training_requested(ctx: HandlerContext) -> Outcome:
    request = ctx.payload_as(TrainingRequested)
    return _launch_or_queue(ctx, request.run_id, request.pipeline)


def on_dataset_arrived(ctx: HandlerContext) -> Outcome:
    arrived = ctx.payload_as(DatasetArrived)
    return _launch_or_queue(ctx, arrived.run_id, arrived.pipeline)


def on_training_completed(ctx: HandlerContext) -> Outcome:
    done = ctx.payload_as(TrainingCompleted)
    slots.lock_pipeline(ctx.tx, done.pipeline)
    run = _run(ctx, done.run_id, done.pipeline)
    job = jobs.job_of(run)
    if "completion" not in job:
        ended = (
            {}
            if jobs.ended(job)
            else {
                "state": "succeeded" if done.status == "succeeded" else "failed",
                "ended_at": jobs.now(),
                "error": done.error,
            }
        )
        jobs.update_job(run, **ended, completion={"event_id": ctx.event.id, "source": ctx.event.source})
    spec = ctx.deps.pipelines.get(run.pipeline)
    started = slots.start_waiting(ctx, spec) if spec is not None else []
    if started:
        ctx.after_commit(partial(launch_all, ctx.deps, started))
    waiting = f"started waiting run(s) {', '.join(started)}" if started else "no waiting run started"
    return Outcome("processed", f"the job of run {run.id} ended ({done.status}); {waiting}")


def _launch_or_queue(ctx: HandlerContext, run_id: str, pipeline: str) -> Outcome:
    slots.lock_pipeline(ctx.tx, pipeline)  # before the row lock: every slot decision locks in this order
    spec = ctx.deps.pipelines.get(pipeline)
    if spec is None:
        raise Rejected(f"{ctx.event.type} names pipeline {pipeline!r}, which has no spec")
    run = _run(ctx, run_id, pipeline)
    if run.state != states.REQUESTED:
        return Outcome("duplicate", f"run {run.id} is already {run.state}; nothing to launch")
    if not (run.dataset and run.dataset["uri"]):
        raise Rejected(f"run {run.id} has no dataset version to train on")
    state = slots.admit(ctx, run, spec, {})
    if state == states.TRAINING:
        ctx.after_commit(partial(launch_all, ctx.deps, [run.id]))
    return Outcome("processed", f"run {run.id} is {state}" + (f": {run.reason}" if run.reason else ""))


def _run(ctx: HandlerContext, run_id: str, pipeline: str) -> Run:
    run = runs.get(ctx.tx, run_id, for_update=True)
    if run is None:
        raise Rejected(f"{ctx.event.type} names run {run_id!r}, which does not exist in the ledger")
    if run.pipeline != pipeline:
        raise Rejected(
            f"{ctx.event.type} says run {run_id} belongs to pipeline {pipeline!r}, "
            f"but the run belongs to {run.pipeline!r}"
        )
    runs.note_event(ctx.tx, run.id, "received", ctx.event, JOB_LAUNCHER)
    ctx.touched(run.id)
    return run
