"""The JSON parts of a run: what services write into a `runs` row and read back, typed in one place.

A run row is the contract between services: the dataset-listener and hparam-consumer
write its trigger and dataset, the job-launcher its job, the completion-handler its
evaluation; the status API shows all of it as is. The columns are JSON, so these types
are what keeps a writer and its readers agreeing on the keys (mypy checks every access).
Keys a record gains over a run's life are optional (`total=False`).
"""

from __future__ import annotations

from typing import Any, Literal, Required, TypedDict


class Trigger(TypedDict, total=False):
    """What made the run."""

    # "dataset" (a dataset arrived), "message" (a hyperparameter message), or the
    # `ctflow-trigger` attribute of a message ("cli", "schedule").
    kind: Required[str]
    event_id: Required[str]
    source: Required[str]
    object: str  # dataset: the commit marker's object name
    message_id: str  # hyperparameters: the Pub/Sub messageId
    reason: str | None  # hyperparameters: the message's `reason`
    hyperparameters_from: str  # dataset: where the launcher took a retrain's hyperparameters


class DatasetRef(TypedDict):
    """The dataset version a run trains on (also carried by dataset.arrived and training.requested)."""

    version: str
    uri: str
    manifest_uri: str
    manifest_sha256: str
    generation: str
    bucket: str
    total_bytes: int
    files: list[dict[str, Any]]


class Lineage(TypedDict, total=False):
    """Which code trained the model: recorded at launch, tagged on the model version."""

    code_version: str  # the ctflow package's version that launched the job
    git_sha: str  # the commit of the checkout the trainer ran from (embedded)
    trainer_image: str  # the image reference the job ran (gcp)
    image_digest: str  # `sha256:...` of that image when it is pinned by digest


class CompletionSeen(TypedDict, total=False):
    """The training.completed event the job-launcher has seen (or emitted) for the job."""

    event_id: Required[str]
    source: Required[str]
    emitted_by: str  # "reconcile" when the job-launcher emitted it for a job that did not report


JobState = Literal["launching", "pending", "running", "succeeded", "failed", "cancelled"]


class JobRecord(TypedDict, total=False):
    """The run's training job (`run.job`)."""

    state: Required[JobState]
    backend: str  # "local" | "vertex"
    job_id: str
    output_uri: str
    model_dir: str | None
    logs: dict[str, str]  # local jobs: stdout, stderr
    error: str | None
    claimed_at: str
    launched_at: str
    ended_at: str
    launch_attempts: int  # claims of the launch lease (ctflow.ledger.leases)
    lineage: Lineage
    completion: CompletionSeen


class TrainerReport(TypedDict, total=False):
    """What the trainer reported about its model (from training.completed)."""

    job_id: str | None
    model_dir: str | None
    artifact_uri: str | None
    mlflow_model_uri: str | None
    epochs_completed: int | None
    resumed_from_epoch: int | None


class EvaluationRecord(TypedDict, total=False):
    """The run's evaluation (`run.evaluation`): the work while `evaluating`, then its result."""

    status: Required[Literal["pending", "running", "done", "failed"]]
    completion: TrainerReport | None
    attempts: int | None  # claims of the evaluation lease
    last_error: str | None
    holdout: dict[str, Any]  # uri, sha256, samples
    challenger: dict[str, float]
    champion: dict[str, Any] | None  # version and its scalars
    gate: dict[str, Any]  # passed, reasons
    evaluation_run_id: str
