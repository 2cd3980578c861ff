"""The training-backend port: start one training job per run, find it again, watch it end.

Adapters: `local.LocalProcessBackend` (embedded: the trainer entrypoint as a child
process) and `vertex.VertexBackend` (gcp: a Vertex AI CustomJob through the v1
JobServiceClient). Both give the trainer the same environment contract: the
request's `env`, plus Vertex's `AIP_MODEL_DIR` and `AIP_CHECKPOINT_DIR` under the
job's output folder.

Neither Vertex nor a process has a request id, so a launch is made idempotent by the
caller: claim the run in the ledger, then `find` (by the run label) before `launch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from ..contracts import TrainingSpec

JobState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
ENDED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
RUN_LABEL = "ctflow-run-id"
PIPELINE_LABEL = "ctflow-pipeline"


class JobRefused(Exception):
    """The backend refused the job as specified (say, an accelerator the machine cannot take).

    Sending the same request again cannot succeed, so the job-launcher fails the run at
    once with this message as the reason, instead of retrying the launch.
    """


@dataclass(frozen=True)
class JobRequest:
    run_id: str
    pipeline: str
    training: TrainingSpec  # image, entrypoint, machine, timeout, service account
    env: dict[str, str]  # the trainer's contract: CTFLOW_*, MLFLOW_* (AIP_* is the backend's)
    labels: dict[str, str] = field(default_factory=dict)  # always includes RUN_LABEL

    @property
    def display_name(self) -> str:
        return f"ctflow-{self.run_id}"[:128]


@dataclass(frozen=True)
class JobStatus:
    job_id: str  # Vertex: the CustomJob resource name; local: "local/<run_id>/<attempt>"
    state: JobState
    output_uri: str  # base output folder: model/ and checkpoints/ live under it
    error: str | None = None  # why it failed, in words a person understands
    ended_at: float | None = None  # epoch seconds, when known
    logs: dict[str, str] | None = None  # where the job's output is, when the backend keeps it (local: files)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def model_dir(self) -> str:
        return f"{self.output_uri.rstrip('/')}/model"


class TrainingBackend(Protocol):
    name: str  # "local" | "vertex": shown on runs and in training.started

    def find(self, run_id: str) -> JobStatus | None:
        """The job launched for `run_id` (newest attempt), looked up by its run label."""

    def launch(self, request: JobRequest) -> JobStatus:
        """Start a job. The caller has claimed the run and looked it up with `find` first."""

    def status(self, job_id: str) -> JobStatus:
        """The job's current state (raises KeyError if the backend has never heard of it)."""

    def cancel(self, job_id: str) -> None:
        """Ask the job to stop; a job that has already ended is left alone."""
