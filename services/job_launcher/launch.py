"""Launching a claimed run's training job exactly once, and announcing it with training.started.

A launch runs after the claim has committed (an after-commit action) and again from
reconcile for runs whose job is still `launching`. Neither Vertex nor a process takes a
request id, so at most one job per run comes from three things together:

1. a lease on the run (compare-and-swap on run.job under the row lock): the after-commit
   call and a reconcile tick never launch at the same time;
2. `find` before `launch`: a job created by a launch that died before recording it is
   found by its run label and recorded instead of started again;
3. the record and training.started (deterministic event id) commit together, once.

A launch that fails is retried by reconcile; after MAX_LAUNCH_ATTEMPTS the job is
recorded as failed, and reconcile reports the run's training as failed with the error.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ctflow import events, states
from ctflow.deps import Dependencies
from ctflow.handling import service_work
from ctflow.ledger import runs
from ctflow.topology import JOB_LAUNCHER
from ctflow.training import PIPELINE_LABEL, RUN_LABEL, JobRefused, JobRequest, JobStatus
from ctflow.training.environment import trainer_environment

from . import jobs
from .retrain import retrain_hyperparameters

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=120)  # longer than any create call; a launcher that died releases it by expiry
MAX_LAUNCH_ATTEMPTS = 3


@dataclass(frozen=True)
class Lease:
    """What a launch needs from the run, read while taking the lease."""

    token: str
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


def launch(deps: Dependencies, run_id: str) -> bool:
    """Start (or find) the run's job and record it; False when there was nothing for this call to do."""
    lease = _take_lease(deps, run_id)
    if lease is None:
        return False
    try:
        status = deps.training.find(run_id) or _start(deps, _with_hyperparameters(deps, lease))
    except Exception as exc:
        _give_back(deps, lease, exc)
        raise
    return _record(deps, run_id, status)


def _take_lease(deps: Dependencies, run_id: str) -> Lease | None:
    with deps.ledger.transaction() as tx:
        run = runs.get(tx, run_id, for_update=True)
        job = jobs.job_of(run) if run is not None else {}
        if run is None or run.state != states.TRAINING or job.get("state") != jobs.LAUNCHING or "job_id" in job:
            return None
        if "lease_until" in job and jobs.seconds_since(job["lease_until"]) < 0:
            return None  # another launch holds it
        token = uuid.uuid4().hex
        jobs.update_job(run, lease=token, lease_until=jobs.iso(datetime.now(UTC) + LEASE))
        retrain = run.trigger.get("kind") == "dataset" and not run.hyperparameters
        return Lease(
            token,
            run.id,
            run.pipeline,
            dict(run.hyperparameters),
            (run.dataset or {}).get("uri"),
            run.trigger.get("event_id"),
            retrain,
        )


def _with_hyperparameters(deps: Dependencies, lease: Lease) -> Lease:
    """A retrain's hyperparameters, chosen now (the registry is asked outside any ledger
    transaction) and recorded on the run, with where they came from, before the job starts."""
    if not lease.retrain:
        return lease
    spec = deps.pipelines.get(lease.pipeline)
    if spec is None:
        raise LookupError(f"pipeline {lease.pipeline!r} has no spec any more")
    hyperparameters, source = retrain_hyperparameters(deps, spec)
    with deps.ledger.transaction() as tx:
        run = runs.get(tx, lease.run_id, for_update=True)
        if run is None or jobs.job_of(run).get("lease") != lease.token:
            raise LookupError(f"run {lease.run_id}: the launch lease was lost while choosing hyperparameters")
        run.hyperparameters = hyperparameters
        run.trigger = {**run.trigger, "hyperparameters_from": source}
    return replace(lease, hyperparameters=hyperparameters, retrain=False)


def _start(deps: Dependencies, lease: Lease) -> JobStatus:
    spec = deps.pipelines.get(lease.pipeline)
    if spec is None:
        raise LookupError(f"pipeline {lease.pipeline!r} has no spec any more")
    if not lease.dataset_uri:
        raise LookupError(f"run {lease.run_id} has no dataset version to train on")
    deps.registry.ensure_experiment(lease.pipeline)  # embedded: artifacts land under <home>/mlartifacts
    env = trainer_environment(
        deps.settings,
        report_uri=deps.trainer_report_uri,
        run_id=lease.run_id,
        pipeline=lease.pipeline,
        dataset_uri=lease.dataset_uri,
        hyperparameters=lease.hyperparameters,
        trigger_event_id=lease.trigger_event_id,
        image=spec.training.image,
    )
    labels = {RUN_LABEL: lease.run_id, PIPELINE_LABEL: lease.pipeline}
    return deps.training.launch(JobRequest(lease.run_id, lease.pipeline, spec.training, env, labels))


def _record(deps: Dependencies, run_id: str, status: JobStatus) -> bool:
    with service_work(deps, JOB_LAUNCHER, "record-launch") as ctx:
        run = runs.get(ctx.tx, run_id, for_update=True)
        if run is None or "job_id" in jobs.job_of(run):
            return False
        jobs.update_job(
            run, **jobs.status_fields(status, deps.training), launched_at=jobs.now(), lease=None, lease_until=None
        )
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


def _give_back(deps: Dependencies, lease: Lease, exc: Exception) -> None:
    """Release the lease so the next reconcile tick retries; give up after MAX_LAUNCH_ATTEMPTS."""
    with deps.ledger.transaction() as tx:
        run = runs.get(tx, lease.run_id, for_update=True)
        job = jobs.job_of(run) if run is not None else {}
        if run is None or job.get("lease") != lease.token:
            return
        attempts = job.get("launch_attempts", 0) + 1
        error = f"could not launch the training job: {type(exc).__name__}: {exc}"
        if isinstance(exc, JobRefused):  # the same request cannot succeed later: no retries
            jobs.update_job(
                run,
                state="failed",
                error=error,
                ended_at=jobs.now(),
                launch_attempts=attempts,
                lease=None,
                lease_until=None,
            )
        elif attempts >= MAX_LAUNCH_ATTEMPTS:
            jobs.update_job(
                run,
                state="failed",
                error=f"{error} (gave up after {attempts} attempts)",
                ended_at=jobs.now(),
                launch_attempts=attempts,
                lease=None,
                lease_until=None,
            )
        else:
            jobs.update_job(run, error=error, launch_attempts=attempts, lease=None, lease_until=None)
