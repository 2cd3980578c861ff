"""Launching a claimed run's training job exactly once, and announcing it with training.started.

A launch runs after the claim has committed (an after-commit action) and again from
reconcile for runs whose job is still `launching`. Neither Vertex nor a process takes a
request id, so at most one job per run comes from three things together:

1. the run's launch lease (ctflow.ledger.leases, named `launch:<run id>`): the after-commit
   call and a reconcile tick never launch at the same time;
2. `find` before `launch`: a job created by a launch that died before recording it is
   found by its run label and recorded instead of started again;
3. the record and training.started (deterministic event id) commit together, once.

A launch that fails is retried by reconcile; after MAX_LAUNCH_ATTEMPTS the job is
recorded as failed, and reconcile reports the run's training as failed with the error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from ctflow import events, states
from ctflow.deps import Dependencies
from ctflow.handling import service_work
from ctflow.ledger import leases, runs
from ctflow.ledger.records import Lineage
from ctflow.topology import JOB_LAUNCHER
from ctflow.training import PIPELINE_LABEL, RUN_LABEL, JobRefused, JobRequest, JobStatus
from ctflow.training.environment import lineage, trainer_environment

from . import jobs
from .retrain import retrain_hyperparameters

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=120)  # longer than any create call; a launcher that died releases it by expiry
MAX_LAUNCH_ATTEMPTS = 3


@dataclass(frozen=True)
class Launch:
    """What a launch needs from the run, read while taking its lease."""

    lease: leases.Lease
    run_id: str
    pipeline: str
    hyperparameters: dict[str, Any]
    dataset_uri: str | None
    trigger_event_id: str | None
    retrain: bool  # a dataset arrival whose hyperparameters are chosen at launch (retrain.py)


def launch_all(deps: Dependencies, run_ids: list[str]) -> int:
    """Launch each claimed run (failures are logged and left to reconcile); returns how many were recorded."""
    recorded = 0
    for run_id in run_ids:
        try:
            recorded += launch(deps, run_id)
        except Exception:  # noqa: BLE001 - recorded on the run; reconcile retries
            log.exception("launching the training job of run %s failed", run_id)
    return recorded


def lease_name(run_id: str) -> str:
    return f"launch:{run_id}"


def launch(deps: Dependencies, run_id: str) -> bool:
    """Start (or find) the run's job and record it; False when there was nothing for this call to do."""
    claimed = _take_lease(deps, run_id)
    if claimed is None:
        return False
    try:
        status = deps.training.find(run_id) or _start(deps, _with_hyperparameters(deps, claimed))
    except Exception as exc:
        _give_back(deps, claimed, exc)
        raise
    return _record(deps, claimed.run_id, status, _lineage(deps, claimed.pipeline))


def _take_lease(deps: Dependencies, run_id: str) -> Launch | None:
    with deps.ledger.transaction() as tx:
        run = runs.get(tx, run_id, for_update=True)
        job = jobs.job_of(run) if run is not None else {}
        if run is None or run.state != states.TRAINING or job.get("state") != jobs.LAUNCHING or "job_id" in job:
            return None
        lease = leases.claim(tx, lease_name(run_id), duration=LEASE)
        if lease is None:
            return None  # another launch holds it
        retrain = run.trigger.get("kind") == "dataset" and not run.hyperparameters
        return Launch(
            lease,
            run.id,
            run.pipeline,
            dict(run.hyperparameters),
            run.dataset["uri"] if run.dataset else None,
            run.trigger.get("event_id"),
            retrain,
        )


def _with_hyperparameters(deps: Dependencies, launch: Launch) -> Launch:
    """A retrain's hyperparameters, chosen now (the registry is asked outside any ledger
    transaction) and recorded on the run, with where they came from, before the job starts."""
    if not launch.retrain:
        return launch
    spec = deps.pipelines.get(launch.pipeline)
    if spec is None:
        raise LookupError(f"pipeline {launch.pipeline!r} has no spec any more")
    hyperparameters, source = retrain_hyperparameters(deps.registry, deps.pipelines, spec)
    with deps.ledger.transaction() as tx:
        run = runs.get(tx, launch.run_id, for_update=True)
        if run is None or not leases.holds(tx, launch.lease):
            raise LookupError(f"run {launch.run_id}: the launch lease was lost while choosing hyperparameters")
        run.hyperparameters = hyperparameters
        run.trigger = {**run.trigger, "hyperparameters_from": source}
    return replace(launch, hyperparameters=hyperparameters, retrain=False)


def _start(deps: Dependencies, launch: Launch) -> JobStatus:
    spec = deps.pipelines.get(launch.pipeline)
    if spec is None:
        raise LookupError(f"pipeline {launch.pipeline!r} has no spec any more")
    if not launch.dataset_uri:
        raise LookupError(f"run {launch.run_id} has no dataset version to train on")
    deps.registry.ensure_experiment(launch.pipeline)  # embedded: artifacts land under <home>/mlartifacts
    env = trainer_environment(
        deps.settings,
        report_uri=deps.trainer_report_uri,
        run_id=launch.run_id,
        pipeline=launch.pipeline,
        dataset_uri=launch.dataset_uri,
        hyperparameters=launch.hyperparameters,
        trigger_event_id=launch.trigger_event_id,
        image=spec.training.image,
    )
    labels = {RUN_LABEL: launch.run_id, PIPELINE_LABEL: launch.pipeline}
    return deps.training.launch(JobRequest(launch.run_id, launch.pipeline, spec.training, env, labels))


def _lineage(deps: Dependencies, pipeline: str) -> Lineage:
    spec = deps.pipelines.get(pipeline)
    return lineage(deps.settings, spec.training.image) if spec is not None else {}


def _record(deps: Dependencies, run_id: str, status: JobStatus, code: Lineage) -> bool:
    with service_work(deps, JOB_LAUNCHER, "record-launch") as ctx:
        run = runs.get(ctx.tx, run_id, for_update=True)
        if run is None or "job_id" in jobs.job_of(run):
            return False
        jobs.update_job(run, **jobs.status_fields(status, deps.training), launched_at=jobs.now(), lineage=code)
        leases.forget(ctx.tx, lease_name(run_id))
        ctx.emit(
            events.run_event(
                events.TRAINING_STARTED,
                JOB_LAUNCHER,
                run_id,
                {
                    "run_id": run_id,
                    "pipeline": run.pipeline,
                    "job_id": status.job_id,
                    "backend": deps.training.name,
                },
                event_id=f"training-started-{run_id}",
            )
        )
    log.info("run %s: job %s is %s", run_id, status.job_id, status.state)
    return True


def _give_back(deps: Dependencies, claimed: Launch, exc: Exception) -> None:
    """Release the lease so the next reconcile tick retries; give up after MAX_LAUNCH_ATTEMPTS."""
    with deps.ledger.transaction() as tx:
        run = runs.get(tx, claimed.run_id, for_update=True)
        if run is None or not leases.holds(tx, claimed.lease):
            return
        attempts = claimed.lease.claims
        error = f"could not launch the training job: {type(exc).__name__}: {exc}"
        if isinstance(exc, JobRefused) or attempts >= MAX_LAUNCH_ATTEMPTS:  # refused: it cannot succeed later
            given_up = "" if isinstance(exc, JobRefused) else f" (gave up after {attempts} attempts)"
            jobs.update_job(run, state="failed", error=error + given_up, ended_at=jobs.now(), launch_attempts=attempts)
            leases.forget(tx, lease_name(claimed.run_id))
        else:
            jobs.update_job(run, error=error, launch_attempts=attempts)
            leases.release(tx, claimed.lease)
