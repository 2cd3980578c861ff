"""What a job reports: the data of its `ctflow.training.completed.v1` event.

Filled in as the job goes (MLflow run, epochs, metrics, artifact URIs), so a job that
fails half-way still reports how far it got.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outcome:
    run_id: str
    pipeline: str | None
    model_dir: str | None
    job_id: str | None
    status: str = "failed"
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    artifact_uri: str | None = None
    mlflow_model_uri: str | None = None
    epochs_completed: int = 0
    resumed_from_epoch: int | None = None

    def event_data(self) -> dict[str, Any]:
        return dict(self.__dict__)
