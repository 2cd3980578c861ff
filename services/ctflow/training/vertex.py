"""Vertex AI CustomJobs as the training backend (gcp mode).

A run becomes one CustomJob: a single worker pool running the trainer image with the
request's environment, labelled with the run id so that `find` can look the job up
before a `launch` (Vertex has no request id). Vertex sets `AIP_MODEL_DIR` and
`AIP_CHECKPOINT_DIR` under the job's base output directory
`gs://<bucket>/runs/<run_id>/`; with `restart_job_on_worker_restart` a preempted (spot)
worker is restarted and the trainer resumes from its last checkpoint there.

Only the v1 `JobServiceClient` is used, imported on first call: the full SDK
(`google.cloud.aiplatform`) costs seconds of cold start, `aiplatform_v1` about one.
Reads and cancel are retried on transient API errors; create is not (a create whose
answer was lost may still have made the job, and the caller's find-before-launch covers
the redelivery). Errors left after retrying propagate, so the intake answers 503 and
Pub/Sub redelivers; a job Vertex refuses as invalid raises `JobRefused`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import timedelta
from functools import cached_property
from typing import Any

from ..settings import Settings
from . import PIPELINE_LABEL, RUN_LABEL, JobRefused, JobRequest, JobState, JobStatus

log = logging.getLogger(__name__)

CALL_TIMEOUT_SECONDS = 30.0
_STATES: dict[str, JobState] = {
    "JOB_STATE_QUEUED": "pending",
    "JOB_STATE_PENDING": "pending",
    "JOB_STATE_PAUSED": "pending",
    "JOB_STATE_RUNNING": "running",
    "JOB_STATE_UPDATING": "running",
    "JOB_STATE_CANCELLING": "running",  # not ended until the worker has stopped
    "JOB_STATE_SUCCEEDED": "succeeded",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_EXPIRED": "failed",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "failed",
    "JOB_STATE_CANCELLED": "cancelled",
}
_LABEL_MAX = 63
_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9_-]")


def label_value(value: str) -> str:
    """`value` as a Vertex label value (lowercase, [a-z0-9_-], at most 63 characters).

    A value that had to change ends in a digest of the original, so two run ids never
    share a label (`find` looks runs up by it) and the same run id always gets the same one.
    """
    clean = _NOT_LABEL_CHARS.sub("-", value.lower())
    if clean == value and len(value) <= _LABEL_MAX:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{clean[: _LABEL_MAX - len(digest) - 1]}-{digest}"


def job_state(vertex_state: str) -> JobState:
    """The port's state for a Vertex `JOB_STATE_*` name; one it does not know is not an end."""
    return _STATES.get(vertex_state, "pending")


class VertexBackend:
    name = "vertex"

    def __init__(self, settings: Settings) -> None:
        if not settings.gcp_project or not settings.bucket:
            raise RuntimeError("the Vertex AI backend needs CTFLOW_GCP_PROJECT and CTFLOW_BUCKET")
        self.settings = settings
        self.parent = f"projects/{settings.gcp_project}/locations/{settings.gcp_region}"
        self.bucket = settings.bucket.removeprefix("gs://").strip("/")

    @cached_property
    def _client(self) -> Any:
        from google.cloud.aiplatform_v1 import JobServiceClient

        endpoint = self.settings.vertex_api_endpoint or f"{self.settings.gcp_region}-aiplatform.googleapis.com"
        if endpoint.startswith("http://"):  # a local stand-in for the API (tests): REST, no credentials
            from google.auth.credentials import AnonymousCredentials

            rest = JobServiceClient.get_transport_class("rest")
            host = endpoint.removeprefix("http://").rstrip("/")
            return JobServiceClient(transport=rest(host=host, credentials=AnonymousCredentials(), url_scheme="http"))
        return JobServiceClient(client_options={"api_endpoint": endpoint.removeprefix("https://")})

    @cached_property
    def _retry(self) -> Any:
        from google.api_core import exceptions, retry

        transient = retry.if_exception_type(
            exceptions.ServiceUnavailable,
            exceptions.InternalServerError,
            exceptions.TooManyRequests,
            exceptions.DeadlineExceeded,
        )
        return retry.Retry(predicate=transient, initial=0.2, maximum=5.0, multiplier=2.0, timeout=30.0)

    def output_uri(self, run_id: str) -> str:
        return f"gs://{self.bucket}/runs/{run_id}/"

    def find(self, run_id: str) -> JobStatus | None:
        query = {"parent": self.parent, "filter": f'labels.{RUN_LABEL}="{label_value(run_id)}"'}
        jobs = self._client.list_custom_jobs(request=query, retry=self._retry, timeout=CALL_TIMEOUT_SECONDS)
        newest = max(jobs, key=lambda job: job.create_time, default=None)  # the API promises no order
        return None if newest is None else job_status(newest)

    def launch(self, request: JobRequest) -> JobStatus:
        from google.api_core.exceptions import BadRequest

        job = self._custom_job(request)
        try:
            created = self._client.create_custom_job(
                parent=self.parent, custom_job=job, retry=None, timeout=CALL_TIMEOUT_SECONDS
            )
        except BadRequest as exc:
            raise JobRefused(f"Vertex AI refused the training job for run {request.run_id}: {exc.message}") from exc
        log.info("created Vertex AI CustomJob %s for run %s", created.name, request.run_id)
        return job_status(created)

    def status(self, job_id: str) -> JobStatus:
        from google.api_core.exceptions import NotFound

        try:
            job = self._client.get_custom_job(name=job_id, retry=self._retry, timeout=CALL_TIMEOUT_SECONDS)
        except NotFound:
            raise KeyError(job_id) from None
        return job_status(job)

    def cancel(self, job_id: str) -> None:
        from google.api_core.exceptions import BadRequest, NotFound

        try:
            self._client.cancel_custom_job(name=job_id, retry=self._retry, timeout=CALL_TIMEOUT_SECONDS)
        except NotFound:
            raise KeyError(job_id) from None
        except BadRequest:  # Vertex refuses to cancel a job in a final state: that one is left alone
            if not self.status(job_id).ended:
                raise

    def _custom_job(self, request: JobRequest) -> Any:
        from google.cloud.aiplatform_v1 import types

        spec = request.training
        labels = {**request.labels, RUN_LABEL: request.run_id, PIPELINE_LABEL: request.pipeline}
        container = types.ContainerSpec(
            image_uri=self.settings.images.get(spec.image, spec.image),  # skaffold artifact name -> built image
            command=list(spec.entrypoint),
            env=[types.EnvVar(name=name, value=value) for name, value in request.env.items()],
        )
        pool = types.WorkerPoolSpec(replica_count=1, machine_spec=_machine(spec.machine), container_spec=container)
        return types.CustomJob(
            display_name=request.display_name,
            labels={label_value(key): label_value(value) for key, value in labels.items()},
            job_spec=types.CustomJobSpec(
                worker_pool_specs=[pool],
                scheduling=_scheduling(spec.timeout_seconds, spec.machine.spot),
                service_account=spec.service_account or self.settings.trainer_service_account or "",
                base_output_directory=types.GcsDestination(output_uri_prefix=self.output_uri(request.run_id)),
            ),
        )


def _machine(machine: Any) -> Any:
    from google.cloud.aiplatform_v1 import types

    spec = types.MachineSpec(machine_type=machine.type)
    if not machine.accelerator_count:
        return spec
    if not machine.accelerator_type:
        raise JobRefused(f"the machine asks for {machine.accelerator_count} accelerators but names no accelerator_type")
    try:
        spec.accelerator_type = types.AcceleratorType.__members__[machine.accelerator_type]
    except KeyError:
        known = ", ".join(n for n in types.AcceleratorType.__members__ if n != "ACCELERATOR_TYPE_UNSPECIFIED")
        raise JobRefused(f"unknown accelerator_type {machine.accelerator_type!r}; Vertex AI knows {known}") from None
    spec.accelerator_count = machine.accelerator_count
    return spec


def _scheduling(timeout_seconds: int, spot: bool) -> Any:
    from google.cloud.aiplatform_v1 import types

    # A restarted worker restarts the whole job, and the trainer resumes from its checkpoint.
    scheduling = types.Scheduling(timeout=timedelta(seconds=timeout_seconds), restart_job_on_worker_restart=True)
    if spot:
        strategy = getattr(types.Scheduling.Strategy, "SPOT", None)
        if strategy is None:
            log.warning("this google-cloud-aiplatform has no Scheduling.Strategy.SPOT; training on demand")
        else:
            scheduling.strategy = strategy
    return scheduling


def job_status(job: Any) -> JobStatus:
    """The port's view of a CustomJob: state, output folder, and why it failed in words."""
    vertex_state = job.state.name
    state = job_state(vertex_state)
    message = job.error.message or None
    if vertex_state == "JOB_STATE_EXPIRED":
        limit = job.job_spec.scheduling.timeout
        message = (f"timed out (the job's timeout is {int(limit.total_seconds())} s)" if limit else "timed out") + (
            f": {message}" if message else ""
        )
    elif vertex_state == "JOB_STATE_PARTIALLY_SUCCEEDED":
        message = "only partially succeeded" + (f": {message}" if message else "")
    elif state == "failed" and not message:
        message = "Vertex AI reports the job failed and gives no reason"
    return JobStatus(
        job_id=job.name,
        state=state,
        output_uri=job.job_spec.base_output_directory.output_uri_prefix,
        error=message if state in ("failed", "cancelled") else None,
        ended_at=job.end_time.timestamp() if job.end_time else None,
    )
