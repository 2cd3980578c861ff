"""Public payload contracts: the pipeline spec, the hyperparameter message, every event's data.

These models are the single source of truth; `ctflow schemas --write` renders them as
the JSON Schemas under schemas/ (a test fails when those files fall behind), and the
intake validates every inbound payload with them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME = r"^[a-z][a-z0-9-]{1,62}$"
Name = Annotated[str, Field(pattern=_NAME)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- pipeline spec (deploy/pipelines/NAME.yaml) ------------------------------------------


class DatasetSpec(Strict):
    prefix: str = Field(description="Bucket prefix under which dataset versions land, ending in '/'.")
    commit_marker: str = "_MANIFEST.json"
    max_files: int = Field(1000, ge=1, le=10_000)
    max_bytes: int = Field(512 * 1024**2, ge=1)

    @field_validator("prefix")
    @classmethod
    def _confined(cls, v: str) -> str:
        if not v.endswith("/") or v.startswith("/") or ".." in v.split("/") or "//" in v:
            raise ValueError("prefix must be relative, end with '/', and contain no '..' or empty segments")
        return v


class HoldoutSpec(Strict):
    uri: str = Field(description="Bucket object (or gs:// URI) of the pinned evaluation set.")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class MachineSpec(Strict):
    type: str = "n1-standard-4"
    accelerator_type: str | None = "NVIDIA_TESLA_T4"
    accelerator_count: int = Field(1, ge=0, le=16)
    spot: bool = False


class TrainingSpec(Strict):
    image: str
    entrypoint: list[str] = Field(min_length=1)
    machine: MachineSpec = MachineSpec()
    timeout_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)
    max_concurrent_runs: int = Field(1, ge=1, le=100)
    max_sweep_points: int = Field(16, ge=1, le=64)
    service_account: str | None = None


class HyperparameterSpec(Strict):
    defaults: dict[str, Any]
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema every training request must satisfy.")


class Guard(Strict):
    metric: str
    max: float | None = None
    min: float | None = None


class EvaluationSpec(Strict):
    primary_metric: str
    direction: Literal["maximize", "minimize"] = "maximize"
    min_value: float | None = None
    min_improvement: float = 0.0
    guards: list[Guard] = []


class ServingSpec(Strict):
    """Where a pipeline's model serves and how a new version's canary is stepped and judged (the rollout plan)."""

    service: Name
    canary_steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        [10, 50, 100], min_length=1, description="Canary traffic percent at each step, increasing, the last 100."
    )
    analysis_interval_seconds: float = Field(30, gt=0, description="Length of one analysis window.")
    warmup_seconds: float = Field(10, ge=0, description="Left out of analysis after every traffic change.")
    min_requests: int = Field(50, ge=0, description="Canary requests a window needs to be judged.")
    max_error_rate: float = Field(0.02, ge=0, le=1, description="Canary 5xx share, absolute.")
    max_error_rate_increase: float = Field(0.01, ge=0, le=1, description="Canary 5xx share minus stable's.")
    max_p95_latency_ms: float = Field(250, gt=0, description="Canary p95 latency, absolute.")
    max_p95_latency_ratio: float = Field(2.0, ge=1, description="Canary p95 over stable p95.")
    failed_windows: int = Field(2, ge=1, description="Failed windows in a row that roll back.")
    inconclusive_deadline_seconds: float = Field(
        900, gt=0, description="How long a step may stay inconclusive (too little traffic) before `when_inconclusive`."
    )
    when_inconclusive: Literal["roll_back", "promote", "pause"] = "roll_back"
    synthetic_traffic: bool = Field(True, description="Send holdout samples to the canary when live traffic is thin.")

    @field_validator("canary_steps")
    @classmethod
    def _steps(cls, steps: list[int]) -> list[int]:
        if any(later <= earlier for earlier, later in zip(steps, steps[1:], strict=False)) or steps[-1] != 100:
            raise ValueError(f"canary_steps must increase and end at 100, got {steps}")
        return steps


class ScheduleSpec(Strict):
    name: Name
    cron: str = Field(description="Five-field cron expression, as Cloud Scheduler takes it.")
    time_zone: str = "Etc/UTC"
    message: dict[str, Any]

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from croniter import croniter

        if len(v.split()) != 5 or not croniter.is_valid(v):
            raise ValueError(f"{v!r} is not a five-field cron expression")
        return v

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone") from None
        return v


class PipelineSpec(Strict):
    name: Name
    description: str = ""
    dataset: DatasetSpec
    holdout: HoldoutSpec
    training: TrainingSpec
    hyperparameters: HyperparameterSpec
    evaluation: EvaluationSpec
    serving: ServingSpec
    schedules: list[ScheduleSpec] = []


# ---- hyperparameter message (Pub/Sub data) ---------------------------------------------


class HyperparameterMessage(Strict):
    pipeline: Name
    hyperparameters: dict[str, Any] = {}
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(
        {}, description="Each key's list of values; the cartesian product becomes one run per point."
    )
    dataset_version: str | None = Field(None, max_length=256)
    reason: str | None = Field(None, max_length=1000)


# ---- event payloads --------------------------------------------------------------------


class DatasetFile(Strict):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class DatasetRef(Strict):
    version: str
    uri: str = Field(description="Folder URI holding the version's files and marker.")
    manifest_uri: str
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    generation: str
    bucket: str
    total_bytes: int = Field(ge=0)
    files: list[DatasetFile]


class DatasetArrived(Strict):
    run_id: str
    pipeline: Name
    dataset: DatasetRef


class TrainingRequested(Strict):
    run_id: str
    pipeline: Name
    hyperparameters: dict[str, Any]
    dataset: DatasetRef | None = None
    sweep_point: int | None = None
    reason: str | None = None


class TrainingStarted(Strict):
    run_id: str
    pipeline: Name
    job_id: str
    backend: str


class TrainingCompleted(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    run_id: str
    pipeline: Name
    status: Literal["succeeded", "failed"]
    error: str | None = None
    metrics: dict[str, float] = {}
    mlflow_run_id: str | None = None
    model_dir: str | None = None
    artifact_uri: str | None = None
    job_id: str | None = None
    mlflow_model_uri: str | None = None
    epochs_completed: int | None = None
    resumed_from_epoch: int | None = None


class ModelRegistered(Strict):
    run_id: str
    pipeline: Name
    model_name: str
    model_version: str
    metrics: dict[str, float]
    champion_version: str | None = None


class ModelRejected(Strict):
    run_id: str
    pipeline: Name
    reasons: list[str] = Field(min_length=1)
    metrics: dict[str, float] = {}
    champion_version: str | None = None


class RolloutChanged(Strict):
    """A rollout moved: it started, its canary's traffic changed, it paused or resumed, or it ended."""

    run_id: str
    pipeline: Name
    environment: Name
    rollout_id: str
    model_version: str
    stable_version: str | None = None
    revision: str
    phase: str
    traffic_percent: int = Field(ge=0, le=100, description="The canary's share of traffic now.")
    reason: str | None = None
    figures: dict[str, float | int | None] = Field({}, description="What the decision was made on (analysis).")


EVENT_PAYLOADS: dict[str, type[BaseModel]] = {
    "ctflow.dataset.arrived.v1": DatasetArrived,
    "ctflow.training.requested.v1": TrainingRequested,
    "ctflow.training.started.v1": TrainingStarted,
    "ctflow.training.completed.v1": TrainingCompleted,
    "ctflow.model.registered.v1": ModelRegistered,
    "ctflow.model.rejected.v1": ModelRejected,
    "ctflow.rollout.started.v1": RolloutChanged,
    "ctflow.rollout.advanced.v1": RolloutChanged,
    "ctflow.rollout.promoted.v1": RolloutChanged,
    "ctflow.rollout.rolled_back.v1": RolloutChanged,
    "ctflow.rollout.superseded.v1": RolloutChanged,
    "ctflow.rollout.paused.v1": RolloutChanged,
    "ctflow.rollout.resumed.v1": RolloutChanged,
    "ctflow.rollout.conflict.v1": RolloutChanged,
}

DOCUMENTS: dict[str, type[BaseModel]] = {
    "pipeline-spec": PipelineSpec,
    "hyperparameter-message": HyperparameterMessage,
    **{f"events/{name}": model for name, model in EVENT_PAYLOADS.items()},
}


def explain(exc: Exception) -> str:
    """A pydantic ValidationError as one line a person can act on."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        parts.append(f"{where}: {re.sub(r'^Value error, ', '', err.get('msg', ''))}")
    return "; ".join(parts)
