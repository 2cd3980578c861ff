"""The MLflow adapter of the registry port: experiments and runs, and the model registry with its aliases.

One registered model per pipeline (named after it). A version carries its lineage as
tags (`ctflow.run_id`, `ctflow.hyperparameters` as JSON, dataset generation and hash,
trigger event id, git sha, image digest, job id, ...). The alias `champion` names what
serves; `challenger` the newest version that passed its gate.

MLflow has no idempotency keys and no conditional updates, so: `register` looks a
version up by its `ctflow.run_id` tag before creating one (the ledger's state fence
and the completion-handler's lease keep two callers from racing past the look-up),
and `move_alias` compares before it swaps (see there for the window that leaves).

Embedded mode keeps MLflow on SQLite in <home>/mlflow.db with artifacts in
<home>/mlartifacts; gcp mode talks to the MLflow server at MLFLOW_TRACKING_URI. A
locked SQLite store (a trainer process writing) or a server answering 503 surfaces
as MLflow's TEMPORARILY_UNAVAILABLE; the registry retries that a few times, then lets
it through as a transient error. mlflow is imported when this module is, never on a
service's start-up path.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import stamina
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from .. import logs
from . import (
    CHAMPION,
    RUN_TAG,
    TAG_PREFIX,
    AliasMoved,
    ModelVersionRef,
    NotFound,
    TrainingRun,
    model_name,
)

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)


# What MLflow answers for a run, model or alias that is not there (a malformed id names nothing either).
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _transient(exc: Exception) -> bool:
    return isinstance(exc, MlflowException) and exc.error_code == "TEMPORARILY_UNAVAILABLE"


_retry_transient = stamina.retry(on=_transient, attempts=4, timeout=60)


class MlflowModelRegistry:
    """The registry port (ctflow.registry.ModelRegistry) on an MLflow tracking server or store."""

    def __init__(self, settings: Settings, *, artifact_root: Path | None = None) -> None:
        self.tracking_uri = settings.tracking_uri
        self.artifact_root = artifact_root  # None: the tracking server chooses
        logs.adopt_library_loggers(*logs.MLFLOW_OWNED_LOGGERS)  # before the client: it may create the store's tables
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self._lock = threading.Lock()
        self._experiments: dict[str, str] = {}  # name -> id: experiments are not deleted under ctflow

    # ---- experiments and runs ---------------------------------------------------------

    def ensure_experiment(self, name: str) -> str:
        """The experiment's id, creating it (embedded: with its artifacts under <home>) if needed."""
        with self._lock:
            if name not in self._experiments:
                self._experiments[name] = self._find_or_create_experiment(name)
            return self._experiments[name]

    def _find_or_create_experiment(self, name: str) -> str:
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

    @_retry_transient
    def training_run(self, mlflow_run_id: str) -> TrainingRun:
        try:
            run = self.client.get_run(mlflow_run_id)
        except MlflowException as exc:
            if exc.error_code in _MISSING:
                raise NotFound(f"MLflow run {mlflow_run_id} does not exist") from None
            raise
        return TrainingRun(run.info.run_id, run.info.status, run.info.artifact_uri, dict(run.data.tags))

    @_retry_transient
    def download(self, artifact_uri: str, dest: Path) -> Path:
        """Copy an artifact folder (file://, gs://, runs:/ or models:/ URI) into `dest`."""
        from mlflow.artifacts import download_artifacts

        try:
            return Path(
                download_artifacts(artifact_uri=artifact_uri, dst_path=str(dest), tracking_uri=self.tracking_uri)
            )
        except MlflowException as exc:
            if exc.error_code in _MISSING:
                raise NotFound(f"no artifacts at {artifact_uri}") from None
            raise

    def log_run(
        self,
        experiment: str,
        *,
        run_name: str,
        tags: dict[str, str],
        metrics: dict[str, float],
        documents: dict[str, Any],
    ) -> str:
        """Log one finished run (tags, metrics, JSON documents as artifacts); returns its id.

        Not retried as a whole: a failure marks the run FAILED and propagates, and the
        caller's next attempt logs a new run.
        """
        from mlflow.entities import Metric

        experiment_id = self.ensure_experiment(experiment)
        run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        try:
            stamp = int(time.time() * 1000)
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()])
            for path, document in documents.items():
                self.client.log_dict(run_id, document, path)
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    # ---- registry ---------------------------------------------------------------------

    @_retry_transient
    def by_alias(self, pipeline: str, alias: str) -> ModelVersionRef | None:
        try:
            mv = self.client.get_model_version_by_alias(model_name(pipeline), alias)
        except MlflowException as exc:
            if exc.error_code in _MISSING:
                return None
            raise
        return _ref(mv)

    def champion(self, pipeline: str) -> ModelVersionRef | None:
        return self.by_alias(pipeline, CHAMPION)

    @_retry_transient
    def versions(self, pipeline: str) -> list[ModelVersionRef]:
        found = self.client.search_model_versions(f"name = '{model_name(pipeline)}'", max_results=1000)
        return sorted((_ref(mv) for mv in found), key=lambda ref: -int(ref.version))

    @_retry_transient
    def version(self, pipeline: str, version: str) -> ModelVersionRef:
        try:
            return _ref(self.client.get_model_version(model_name(pipeline), version))
        except MlflowException as exc:
            if exc.error_code in _MISSING:
                raise NotFound(f"{model_name(pipeline)} has no version {version}") from None
            raise

    @_retry_transient
    def register(
        self, pipeline: str, *, run_id: str, source: str, mlflow_run_id: str, tags: dict[str, str]
    ) -> ModelVersionRef:
        """The one model version of ctflow run `run_id`: found by its tag, else created with `tags`.

        The tags are written by the same call that creates the version, so a crash right
        after it leaves a version the next attempt finds; that attempt brings the found
        version's tags up to date (its evaluation run, say) rather than creating another.
        """
        found = self._find(pipeline, run_id)
        if found is not None:
            stale = {k: v for k, v in tags.items() if found.tags.get(k) != v}
            for key, value in stale.items():
                self.client.set_model_version_tag(found.name, found.version, key, value)
            return replace(found, tags={**found.tags, **stale})
        name = model_name(pipeline)
        try:
            self.client.create_registered_model(
                name, tags={f"{TAG_PREFIX}pipeline": pipeline}, description=f"ctflow pipeline {pipeline}"
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        mv = self.client.create_model_version(name, source, run_id=mlflow_run_id, tags={**tags, RUN_TAG: run_id})
        log.info("registered %s version %s for run %s", name, mv.version, run_id)
        return _ref(mv)

    @_retry_transient
    def set_alias(self, pipeline: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(model_name(pipeline), alias, version)

    @_retry_transient
    def move_alias(self, pipeline: str, alias: str, to_version: str, expected_current: str | None) -> None:
        """Point `alias` at `to_version` only if it still points at `expected_current` (None: unset).

        MLflow cannot update conditionally, so this reads, compares, then writes: a writer
        that moves the alias between our read and our write (one round trip, milliseconds)
        is overwritten. Callers that move `champion` therefore do it from one place per
        pipeline (the deployer's rollout, itself fenced in the ledger); the compare catches
        every move made before the caller's decision, which is the race that matters.
        A retry after a write that did land finds the alias at `to_version` and succeeds.
        """
        current = self.by_alias(pipeline, alias)
        now = current.version if current else None
        if now == to_version:
            return
        if now != expected_current:
            raise AliasMoved(
                f"alias {alias} of {model_name(pipeline)} points to version {now or '(none)'}, "
                f"not {expected_current or '(none)'} as expected; left unchanged"
            )
        self.client.set_registered_model_alias(model_name(pipeline), alias, to_version)

    def _find(self, pipeline: str, run_id: str) -> ModelVersionRef | None:
        if "'" in pipeline or "'" in run_id or "`" in run_id:
            raise ValueError(f"unsafe name in a registry search: {pipeline!r}, {run_id!r}")
        found = self.client.search_model_versions(f"name = '{model_name(pipeline)}' and tags.`{RUN_TAG}` = '{run_id}'")
        if not found:
            return None
        if len(found) > 1:
            log.error("%d versions of %s carry %s=%s; using the oldest", len(found), pipeline, RUN_TAG, run_id)
        return _ref(min(found, key=lambda mv: int(mv.version)))


def _ref(mv: Any) -> ModelVersionRef:
    return ModelVersionRef(
        name=mv.name, version=str(mv.version), source=mv.source, run_id=mv.run_id, tags=dict(mv.tags or {})
    )
