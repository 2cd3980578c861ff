"""MLflow bookkeeping for one job: one run per ctflow run id, resumed across restarts.

The run is found before it is created (checkpoint, then `MLFLOW_RUN_ID` from MLflow
Projects, then a RUNNING run tagged with the ctflow run id), so a restarted job keeps
logging into the same run. It gets the hyperparameters as params, the ctflow tags,
the dataset as an input (manifest digest, dataset URI as source), the curves (see
curves.py), the model files under `model/`, an MLflow model, and summary metrics.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

from ctflow.logs import MLFLOW_OWNED_LOGGERS, adopt_library_loggers
from ctflow_trainer.config import JobConfig
from ctflow_trainer.curves import CurveLog
from ctflow_trainer.logs import LOGGER_NAME

MODEL_ARTIFACT_PATH = "model"
MLFLOW_MODEL_NAME = "mlflow_model"
DIGEST_LIMIT = 36  # MLflow stores dataset digests in a 36-character column
LOG_INPUT_ATTEMPTS = 3
log = logging.getLogger(LOGGER_NAME)


class Tracker:
    def __init__(self, cfg: JobConfig) -> None:
        import mlflow
        from mlflow import MlflowClient

        adopt_library_loggers(*MLFLOW_OWNED_LOGGERS, level=logging.WARNING)
        self._mlflow = mlflow
        self.cfg = cfg
        self.client = MlflowClient(tracking_uri=cfg.tracking_uri)
        self.run_id: str | None = None
        self.artifact_uri: str | None = None
        self.curves = CurveLog(self.client)

    def tags(self, manifest_sha256: str) -> dict[str, str]:
        c = self.cfg
        values = {
            "run_id": c.run_id,
            "pipeline": c.pipeline,
            "trigger_event_id": c.trigger_event_id,
            "code_version": c.code_version,
            "git_sha": c.git_sha,
            "image_digest": c.image_digest,
            "job_id": c.job_id,
            "dataset_uri": c.dataset_uri,
            "manifest_sha256": manifest_sha256,
        }
        return {f"ctflow.{k}": v for k, v in values.items() if v is not None}

    def start(self, resume_run_id: str | None, dataset: Any) -> str:
        """Open (or reopen) the run; log params, tags and the dataset input. Returns the run id."""
        from mlflow.entities import Param, RunTag

        tags = self.tags(dataset.manifest.sha256)
        run_id = resume_run_id or self.cfg.mlflow_run_id or self._find_running_run()
        if run_id is None:
            experiment_id = self._experiment_id()
            created = self.client.create_run(experiment_id, tags=tags, run_name=self.cfg.run_id)
            self.curves.attach(created.info.run_id, resumed=False)
        else:
            self.curves.attach(run_id, resumed=True)
        run_id = self.run_id = self._started()
        self.artifact_uri = self.client.get_run(run_id).info.artifact_uri
        params = [Param(k, str(v)) for k, v in self.cfg.hyperparameters.as_dict().items()]
        self.client.log_batch(run_id, params=params, tags=[RunTag(k, v) for k, v in tags.items()])
        self._log_dataset(dataset)
        return run_id

    def _started(self) -> str:
        """The MLflow run's id; a call before `start` is a bug."""
        run_id = self.run_id or self.curves.run_id
        if run_id is None:
            raise RuntimeError("the MLflow run has not been started")
        return run_id

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.cfg.experiment_name
        if (experiment := self.client.get_experiment_by_name(name)) is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another job created it first
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _find_running_run(self) -> str | None:
        experiment = self.client.get_experiment_by_name(self.cfg.experiment_name)
        if experiment is None or "'" in self.cfg.run_id:
            return None
        runs = self.client.search_runs(
            [experiment.experiment_id],
            max_results=1,
            filter_string=f"tags.`ctflow.run_id` = '{self.cfg.run_id}' and attributes.status = 'RUNNING'",
        )
        return runs[0].info.run_id if runs else None

    def _log_dataset(self, dataset: Any) -> None:
        from mlflow.data.numpy_dataset import from_numpy
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        with warnings.catch_warnings():  # "file://" resolves two equivalent ways; either is right
            warnings.simplefilter("ignore", UserWarning)
            numpy_dataset = from_numpy(
                dataset.x,
                targets=dataset.y,
                source=self.cfg.dataset_uri,
                name=self.cfg.pipeline,
                digest=dataset.manifest.sha256[:DIGEST_LIMIT],
            )
        # mlflow.log_input does the same, but the fluent API needs an active run.
        entity = DatasetInput(numpy_dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])
        self._log_inputs_despite_a_concurrent_job(entity)

    def _log_inputs_despite_a_concurrent_job(self, entity: Any) -> None:
        """Link the dataset to the run, retrying when another job's insert of it collides with ours.

        The jobs of a sweep start together on one dataset. MLflow looks the dataset up and
        then inserts it, so two jobs at once can both miss it and one insert fails on the
        dataset's unique key (an IntegrityError from a SQL store, a 400 from a server).
        Linking again finds the other job's row: the retry is safe.
        """
        from mlflow.exceptions import MlflowException

        for attempt in range(1, LOG_INPUT_ATTEMPTS + 1):
            try:
                self.client.log_inputs(self._started(), datasets=[entity])
                return
            except MlflowException as exc:
                if attempt == LOG_INPUT_ATTEMPTS:
                    raise
                log.warning("logging the dataset input failed (attempt %d): %s; retrying", attempt, str(exc)[:300])
                time.sleep(0.05 * attempt)

    def log_model_files(self, local_dir: Path) -> str:
        """Upload the exported files under `model/`; returns that folder's artifact URI."""
        self.client.log_artifacts(self._started(), str(local_dir), MODEL_ARTIFACT_PATH)
        return f"{(self.artifact_uri or '').rstrip('/')}/{MODEL_ARTIFACT_PATH}"

    def log_mlflow_model(self, scripted: Any, example: Any, num_classes: int) -> str:
        """Log the TorchScript model as an MLflow model with signature and input example."""
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example.shape[1:]))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
        )
        if self.cfg.tracking_uri:
            self._mlflow.set_tracking_uri(self.cfg.tracking_uri)  # the fluent API reads the global
        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]
        # serialization_format="pickle" on a ScriptModule means torch.jit.save; hush the notice.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        with (
            self._mlflow.start_run(run_id=self.run_id, log_system_metrics=False),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            info = mlflow.pytorch.log_model(
                scripted,
                name=MLFLOW_MODEL_NAME,
                signature=signature,
                input_example=example,
                pip_requirements=requirements,
                serialization_format="pickle",
            )
        return info.model_uri

    def finish(self, status: str, final_metrics: dict[str, float] | None = None) -> None:
        """Send what is queued and the summary metrics; close the run as FINISHED or FAILED."""
        from mlflow.entities import Metric

        if not self.run_id:
            return
        self.curves.flush()
        self.curves.wait()
        if final_metrics:
            stamp = int(time.time() * 1000)
            summary = [Metric(k, float(v), stamp, 0) for k, v in final_metrics.items()]
            self.client.log_batch(self.run_id, metrics=summary)
        self.client.set_terminated(self.run_id, status)
