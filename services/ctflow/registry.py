"""The MLflow port: experiments for training runs, and the model registry with its aliases.

One registered model per pipeline (named after it). A version carries its lineage as
tags (`ctflow.run_id`, `ctflow.hyperparameters` as JSON, dataset generation and hash,
trigger event id, git sha, image digest, job id). The alias `champion` names what
serves; `challenger` the newest version that passed its gate.

Embedded mode keeps MLflow on SQLite in <home>/mlflow.db with artifacts in
<home>/mlartifacts; gcp mode talks to the MLflow server at MLFLOW_TRACKING_URI.
mlflow is imported when this module is, never on a service's start-up path.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PREFIX = "ctflow."


@dataclass(frozen=True)
class ModelVersionRef:
    name: str
    version: str
    source: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        raw = self.tags.get(f"{TAG_PREFIX}hyperparameters")
        return json.loads(raw) if raw else {}


def model_name(pipeline: str) -> str:
    return pipeline


class ModelRegistry:
    def __init__(self, settings: Settings) -> None:
        self.tracking_uri = settings.tracking_uri
        self.artifact_root = settings.mlflow_artifact_root
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self._lock = threading.Lock()

    # ---- experiments ------------------------------------------------------------------

    def ensure_experiment(self, name: str) -> str:
        """The experiment's id, creating it (embedded: with its artifacts under <home>) if needed."""
        with self._lock:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            location = (self.artifact_root / name).as_uri() if self.artifact_root else None
            try:
                return self.client.create_experiment(name, artifact_location=location)
            except MlflowException:  # another process created it first
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
                return found.experiment_id

    # ---- registry ---------------------------------------------------------------------

    def by_alias(self, pipeline: str, alias: str) -> ModelVersionRef | None:
        try:
            mv = self.client.get_model_version_by_alias(model_name(pipeline), alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return _ref(mv)

    def champion(self, pipeline: str) -> ModelVersionRef | None:
        return self.by_alias(pipeline, CHAMPION)


def _ref(mv: Any) -> ModelVersionRef:
    return ModelVersionRef(name=mv.name, version=str(mv.version), source=mv.source, run_id=mv.run_id,
                           tags=dict(mv.tags or {}))
