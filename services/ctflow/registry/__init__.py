"""The model registry port: experiments and runs, registered versions, aliases with compare-and-swap, tags.

One registered model per pipeline (named after it). A version carries its lineage as
tags (`ctflow.run_id`, `ctflow.hyperparameters` as JSON, dataset generation and hash,
trigger event id, code version, git sha, image digest, job id, ...). The alias
`champion` names what serves; `challenger` the newest version that passed its gate;
`previous` the champion before the last promotion.

Adapters: `MlflowModelRegistry` (ctflow.registry.mlflow_registry; MLflow is imported
only there) and, for unit tests of handlers, an in-memory fake (tests/fakes/registry.py)
held to the same contract by tests/integration/test_registry_contract.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"  # the champion before the last promotion (a rollback target)
TAG_PREFIX = "ctflow."
RUN_TAG = f"{TAG_PREFIX}run_id"
MODEL_FILES_PATH = "model"  # where the trainer logs model.pt, state_dict.pt, model_config.json in its run


class NotFound(LookupError):
    """The MLflow run, artifact or registered model asked for does not exist."""


class AliasMoved(RuntimeError):
    """Compare-and-swap refused: the alias no longer points where the caller expected."""


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


@dataclass(frozen=True)
class TrainingRun:
    """An MLflow run as a training job left it."""

    run_id: str
    status: str
    artifact_uri: str
    tags: dict[str, str]

    @property
    def model_files_uri(self) -> str:
        """The run's `model/` folder: TorchScript, state_dict and model_config.json."""
        return f"{self.artifact_uri.rstrip('/')}/{MODEL_FILES_PATH}"


def model_name(pipeline: str) -> str:
    return pipeline


class ModelRegistry(Protocol):
    def ensure_experiment(self, name: str) -> str:
        """The experiment's id, creating it if needed."""

    def training_run(self, mlflow_run_id: str) -> TrainingRun:
        """The run a training job logged; NotFound if there is none."""

    def download(self, artifact_uri: str, dest: Path) -> Path:
        """Copy an artifact folder into `dest`; NotFound if there is nothing at the URI."""

    def log_run(
        self,
        experiment: str,
        *,
        run_name: str,
        tags: dict[str, str],
        metrics: dict[str, float],
        documents: dict[str, Any],
    ) -> str:
        """Log one finished run (tags, metrics, JSON documents); returns its id."""

    def by_alias(self, pipeline: str, alias: str) -> ModelVersionRef | None: ...

    def version(self, pipeline: str, version: str) -> ModelVersionRef:
        """One registered version; NotFound if the pipeline's model has no such version."""

    def versions(self, pipeline: str) -> list[ModelVersionRef]:
        """Every registered version of the pipeline's model, newest first ([] when it has none)."""

    def champion(self, pipeline: str) -> ModelVersionRef | None: ...

    def register(
        self, pipeline: str, *, run_id: str, source: str, mlflow_run_id: str, tags: dict[str, str]
    ) -> ModelVersionRef:
        """The one version of ctflow run `run_id`: found by its tag (its tags brought up to date), else created."""

    def set_alias(self, pipeline: str, alias: str, version: str) -> None: ...

    def move_alias(self, pipeline: str, alias: str, to_version: str, expected_current: str | None) -> None:
        """Point `alias` at `to_version` only if it points at `expected_current` now (None: unset); AliasMoved if not.
        Moving it where it already points succeeds (a retry)."""
