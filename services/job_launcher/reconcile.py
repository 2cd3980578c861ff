"""The job-launcher's reconcile tick: finish launches, watch running jobs, fill free slots.

Every job not known to have ended is polled, so a run's job record says how its job ended
even when the report went straight to the completion-handler (embedded mode).

(a) Runs whose job is still `launching` (the after-commit launch died, or failed and was
    given back) are launched again; the lease keeps this from racing a launch under way.
(b) Running jobs are polled. A job that ended while its run is still `training`, with no
    training.completed seen for it, gets one: a job that died without writing a report
    (crash, SIGKILL, preemption, timeout) at once, as a failed completion with the
    backend's reason, so the run fails within one tick; a job that wrote its report gets
    that report re-emitted once `job_poll_grace_seconds` show its delivery was lost.
(c) Queued runs start when their pipeline has free slots (embedded trainers report to the
    completion-handler only, so this is how a finished local job hands its slot on).
"""

from __future__ import annotations

import logging

from ctflow import states
from ctflow.deps import Dependencies
from ctflow.handling import service_work
from ctflow.ledger import runs
from ctflow.ledger.records import JobRecord
from ctflow.topology import JOB_LAUNCHER
from ctflow.training import JobStatus

from . import jobs, slots
from .completions import failed_completion, reported_completion
from .launch import launch_all

log = logging.getLogger(__name__)
ACTIVE = (jobs.LAUNCHING, "pending", "running")  # job states that have not ended


def reconcile_jobs(deps: Dependencies) -> dict[str, int]:
    with deps.ledger.transaction() as tx:
        # Runs in `training`, and any run whose job has not ended (the completion-handler may
        # have moved the run on while the job record still says running).
        watched = [(run.id, run.pipeline, run.state, run.job) for run in runs.with_live_jobs(tx, ACTIVE) if run.job]
        waiting = runs.pipelines_with(tx, states.QUEUED)
    launching = [
        run_id for run_id, _, state, job in watched if state == states.TRAINING and job.get("state") == jobs.LAUNCHING
    ]
    report = {"jobs_launched": launch_all(deps, launching) if launching else 0, "completions_emitted": 0}
    for run_id, pipeline, state, job in watched:
        if job.get("state") != jobs.LAUNCHING:
            try:
                report["completions_emitted"] += _watch(deps, run_id, pipeline, state, job)
            except Exception:  # noqa: BLE001 - one broken job must not stop the others
                log.exception("watching the job of run %s failed", run_id)
    started = []
    for pipeline in waiting:
        if (spec := deps.pipelines.get(pipeline)) is not None:
            with service_work(deps, JOB_LAUNCHER, "start-waiting") as ctx:
                started += slots.start_waiting(ctx, spec)
    report["queued_started"] = len(started)
    launch_all(deps, started)
    return report


def _watch(deps: Dependencies, run_id: str, pipeline: str, state: str, job: JobRecord) -> bool:
    """Refresh one job from its backend; True when this tick emitted its training.completed."""
    if not jobs.ended(job):
        job = _refresh(deps, run_id, job)
    if state != states.TRAINING or "completion" in job:
        return False  # the run has moved on, or the job's report has been seen (or emitted) already
    if not jobs.ended(job):
        return False
    reported = reported_completion(deps.blobs, job.get("model_dir"), run_id)
    if reported is not None and jobs.seconds_since(job["ended_at"]) < deps.settings.job_poll_grace_seconds:
        return False  # the job wrote its report: its own delivery may still be on the way
    event = reported or failed_completion(run_id, pipeline, job)
    with service_work(deps, JOB_LAUNCHER, "report-ended-job") as ctx:
        run = runs.get(ctx.tx, run_id, for_update=True)
        if run is None or run.state != states.TRAINING or "completion" in jobs.job_of(run):
            return False
        ctx.emit(event)
        jobs.update_job(run, completion={"event_id": event.id, "source": event.source, "emitted_by": "reconcile"})
    log.warning(
        "run %s: its job ended without a delivered report; emitted %s (%s)", run_id, event.id, event.data["status"]
    )
    return True


def _refresh(deps: Dependencies, run_id: str, job: JobRecord) -> JobRecord:
    try:
        status = deps.training.status(job["job_id"])
    except KeyError:
        status = JobStatus(
            job["job_id"],
            "failed",
            job.get("output_uri", ""),
            f"the {job.get('backend')} backend has no record of job {job['job_id']}",
        )
    fields = jobs.status_fields(status, deps.training)
    if all(job.get(k) == v for k, v in fields.items()):
        return job
    with deps.ledger.transaction() as tx:
        run = runs.get(tx, run_id, for_update=True)
        if run is None:
            return job
        jobs.update_job(run, **fields)
        return run.job or job
