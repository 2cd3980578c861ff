"""training.completed events the job-launcher emits for jobs whose own report went missing.

A job that wrote its report (completion.json next to the model) but whose delivery was
lost gets THAT event re-emitted: same id and source, so the completion-handler's inbox
drops it if the original did arrive. A job that ended without a report (crash, SIGKILL,
preemption, timeout) gets a failed completion with the backend's reason.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from ctflow import events
from ctflow.blobstore import BlobStore, split_gs_uri
from ctflow.codec import MalformedRequest, decode_request
from ctflow.contracts import TrainingCompleted
from ctflow.events import Event
from ctflow.ledger.records import JobRecord
from ctflow.topology import JOB_LAUNCHER

log = logging.getLogger(__name__)
MAX_REPORT_BYTES = 1024 * 1024


def reported_completion(blobs: BlobStore, model_dir: str | None, run_id: str) -> Event | None:
    """The training.completed event the job left in its model folder, if any and if it is this run's."""
    raw = _read(blobs, f"{model_dir.rstrip('/')}/{events.COMPLETION_FILE}") if model_dir else None
    if raw is None:
        return None
    try:
        event = decode_request({"content-type": "application/cloudevents+json"}, raw)
        report = TrainingCompleted.model_validate(event.data)
    except (MalformedRequest, ValidationError) as exc:
        log.warning("ignoring the unreadable %s of run %s: %s", events.COMPLETION_FILE, run_id, exc)
        return None
    if event.type != events.TRAINING_COMPLETED or event.subject != run_id or report.run_id != run_id:
        log.warning("ignoring a %s in %s that is not run %s's report", events.COMPLETION_FILE, model_dir, run_id)
        return None
    return event


def failed_completion(run_id: str, pipeline: str, job: JobRecord) -> Event:
    error = job.get("error") or f"the training job ended ({job.get('state')}) without a readable report"
    data: dict[str, Any] = {
        "run_id": run_id,
        "pipeline": pipeline,
        "status": "failed",
        "error": error,
        "metrics": {},
        "job_id": job.get("job_id"),
        "model_dir": job.get("model_dir"),
    }
    return events.run_event(
        events.TRAINING_COMPLETED, JOB_LAUNCHER, run_id, data, event_id=events.training_completed_id(run_id)
    )


def _read(blobs: BlobStore, uri: str) -> bytes | None:
    if (parts := split_gs_uri(uri)) is not None:
        bucket, name = parts
        if bucket != blobs.bucket:
            log.warning("cannot read %s: the job-launcher reads bucket %s only", uri, blobs.bucket)
            return None
        try:
            return blobs.read_bytes(name, max_bytes=MAX_REPORT_BYTES)
        except (FileNotFoundError, ValueError):  # absent, or too large to be a report
            return None
    path = Path(unquote(urlsplit(uri).path)) if uri.startswith("file://") else Path(uri)
    try:
        with path.open("rb") as report:
            return report.read(MAX_REPORT_BYTES)
    except FileNotFoundError:
        return None
