"""An in-memory model registry (ctflow.registry.ModelRegistry) for unit tests of handlers.

It keeps what the MLflow adapter keeps, the way that adapter answers: one registered
model per pipeline, versions numbered from 1, a version found again by its
`ctflow.run_id` tag, aliases moved by compare-and-swap, NotFound for runs and artifacts
that are not there. tests/integration/test_registry_contract.py runs the same
specification against both, so a handler tested on this fake behaves the same on MLflow.
Artifacts are folders on disk that a test names by URI (`add_artifacts`).
"""

from __future__ import annotations

import itertools
import shutil
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ctflow.registry import CHAMPION, RUN_TAG, AliasMoved, ModelVersionRef, NotFound, TrainingRun, model_name


@dataclass
class LoggedRun:
    experiment: str
    name: str
    tags: dict[str, str]
    metrics: dict[str, float]
    documents: dict[str, Any]


@dataclass
class InMemoryModelRegistry:
    experiments: dict[str, str] = field(default_factory=dict)
    runs: dict[str, TrainingRun] = field(default_factory=dict)
    logged: dict[str, LoggedRun] = field(default_factory=dict)
    by_name: dict[str, list[ModelVersionRef]] = field(default_factory=dict)  # model name -> versions in order
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)  # (model name, alias) -> version
    artifacts: dict[str, Path] = field(default_factory=dict)  # URI -> local folder
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # ---- what a test sets up ----------------------------------------------------------------

    def add_training_run(self, *, tags: dict[str, str], artifact_uri: str, status: str = "FINISHED") -> TrainingRun:
        run = TrainingRun(uuid.uuid4().hex, status, artifact_uri, dict(tags))
        self.runs[run.run_id] = run
        return run

    def add_artifacts(self, uri: str, folder: Path) -> None:
        self.artifacts[uri.rstrip("/")] = folder

    # ---- the port -----------------------------------------------------------------------------

    def ensure_experiment(self, name: str) -> str:
        return self.experiments.setdefault(name, str(next(self._ids)))

    def training_run(self, mlflow_run_id: str) -> TrainingRun:
        if mlflow_run_id not in self.runs:
            raise NotFound(f"MLflow run {mlflow_run_id} does not exist")
        return self.runs[mlflow_run_id]

    def download(self, artifact_uri: str, dest: Path) -> Path:
        folder = self.artifacts.get(artifact_uri.rstrip("/"))
        if folder is None:
            raise NotFound(f"no artifacts at {artifact_uri}")
        target = dest / folder.name
        shutil.copytree(folder, target)
        return target

    def log_run(
        self,
        experiment: str,
        *,
        run_name: str,
        tags: dict[str, str],
        metrics: dict[str, float],
        documents: dict[str, Any],
    ) -> str:
        self.ensure_experiment(experiment)
        run_id = uuid.uuid4().hex
        self.logged[run_id] = LoggedRun(experiment, run_name, dict(tags), dict(metrics), dict(documents))
        return run_id

    def by_alias(self, pipeline: str, alias: str) -> ModelVersionRef | None:
        version = self.aliases.get((model_name(pipeline), alias))
        return self._version(pipeline, version) if version is not None else None

    def champion(self, pipeline: str) -> ModelVersionRef | None:
        return self.by_alias(pipeline, CHAMPION)

    def register(
        self, pipeline: str, *, run_id: str, source: str, mlflow_run_id: str, tags: dict[str, str]
    ) -> ModelVersionRef:
        name = model_name(pipeline)
        versions = self.by_name.setdefault(name, [])
        for place, found in enumerate(versions):
            if found.tags.get(RUN_TAG) == run_id:
                versions[place] = replace(found, tags={**found.tags, **tags})
                return versions[place]
        created = ModelVersionRef(name, str(len(versions) + 1), source, mlflow_run_id, {**tags, RUN_TAG: run_id})
        versions.append(created)
        return created

    def version(self, pipeline: str, version: str) -> ModelVersionRef:
        return self._version(pipeline, version)

    def versions(self, pipeline: str) -> list[ModelVersionRef]:
        return sorted(self.by_name.get(model_name(pipeline), []), key=lambda ref: -int(ref.version))

    def set_alias(self, pipeline: str, alias: str, version: str) -> None:
        self._version(pipeline, version)  # MLflow refuses an alias to a version that does not exist
        self.aliases[(model_name(pipeline), alias)] = version

    def move_alias(self, pipeline: str, alias: str, to_version: str, expected_current: str | None) -> None:
        now = self.aliases.get((model_name(pipeline), alias))
        if now == to_version:
            return
        if now != expected_current:
            raise AliasMoved(
                f"alias {alias} of {model_name(pipeline)} points to version {now or '(none)'}, "
                f"not {expected_current or '(none)'} as expected; left unchanged"
            )
        self.set_alias(pipeline, alias, to_version)

    def _version(self, pipeline: str, version: str) -> ModelVersionRef:
        for found in self.by_name.get(model_name(pipeline), []):
            if found.version == version:
                return found
        raise NotFound(f"{model_name(pipeline)} has no version {version}")
