"""One training job from start to report: the trainer's composition root.

Reads the environment, then: verify the dataset, restore the latest checkpoint,
open the MLflow run, train with per-epoch checkpoints and buffered metrics, export
the model to `AIP_MODEL_DIR` and MLflow, close the run. Whatever happens after the run
id is known, a completion event is built, written as `completion.json` and delivered;
the exit code is 0 when training succeeded and 1 otherwise. torch and mlflow are
imported inside `_train`, so even a broken install still produces a failure report.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctflow_trainer import report, uris
from ctflow_trainer.config import ConfigError, JobConfig, parse_overrides
from ctflow_trainer.logs import configure_logging


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


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    return run_job(os.environ if env is None else env, sys.argv[1:] if argv is None else argv)


def run_job(env: Mapping[str, str], argv: Sequence[str] = ()) -> int:
    run_id = env.get("CTFLOW_RUN_ID", "").strip() or None
    log = configure_logging(run_id)
    if run_id is None:
        log.error("CTFLOW_RUN_ID is not set: nothing to train and no run to report on")
        return 1
    outcome = Outcome(run_id=run_id, pipeline=env.get("CTFLOW_PIPELINE") or None,
                      model_dir=env.get("AIP_MODEL_DIR") or None,
                      job_id=env.get("CTFLOW_JOB_ID") or env.get("CLOUD_ML_JOB_ID") or None)
    try:
        cfg = JobConfig.from_env(env, parse_overrides(argv))
        _train(cfg, env, outcome, log)
        outcome.status = "succeeded"
        log.info("training succeeded", extra={"fields": {"metrics": outcome.metrics}})
    except Exception as exc:  # every failure is reported, then the exit code says so
        outcome.status, outcome.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("training failed: %s", outcome.error, exc_info=not isinstance(exc, ConfigError | ValueError))
    except SystemExit as exc:  # argparse --help or a usage error
        outcome.status, outcome.error = "failed", f"command line rejected (exit {exc.code})"
    event = report.build_event(outcome.event_data(), traceparent=env.get("CTFLOW_TRACEPARENT") or None)
    _write_completion(event, outcome.model_dir, env.get("AIP_CHECKPOINT_DIR") or None, log)
    report.deliver(event, env.get("CTFLOW_REPORT_URI") or None)
    return 0 if outcome.status == "succeeded" else 1


def _write_completion(event: report.CompletionEvent, model_dir: str | None, checkpoint_dir: str | None,
                      log: Any) -> None:
    for folder in (model_dir, checkpoint_dir):
        if not folder:
            continue
        try:
            uris.write_bytes(uris.join(folder, report.COMPLETION_FILE), event.structured(), "application/json")
            return
        except Exception as exc:
            log.warning("cannot write %s into %s: %s", report.COMPLETION_FILE, folder, exc)
    log.error("completion.json was written nowhere (AIP_MODEL_DIR and AIP_CHECKPOINT_DIR unusable)")


def epoch_callback(tracker: Any, checkpointer: Any, outcome: Outcome, log: Any) -> Any:
    """What happens after every epoch: queue the curves for MLflow, checkpoint, log a line."""

    def on_epoch_end(trainer: Any, metrics: dict[str, float]) -> None:
        epoch = trainer.progress.epoch
        outcome.epochs_completed = epoch
        tracker.record_epoch(metrics)
        checkpointer.maybe_save(epoch, trainer.state_dict, tracker.run_id, force=trainer.progress.finished)
        log.info("epoch %d", epoch, extra={"fields": {"metrics": metrics}})

    return on_epoch_end


def _train(cfg: JobConfig, env: Mapping[str, str], outcome: Outcome, log: Any) -> None:
    if not cfg.model_dir:
        raise ConfigError("environment variable AIP_MODEL_DIR is required: it is where the model goes")
    from ctflow_trainer.checkpoints import Checkpointer
    from ctflow_trainer.data import load_verified_dataset, split
    from ctflow_trainer.export import TORCHSCRIPT_FILE, export_model, write_tensorboard
    from ctflow_trainer.runtime import configure_torch
    from ctflow_trainer.tracking import Tracker
    from ctflow_trainer.training import Trainer

    hp = cfg.hyperparameters
    dataset = load_verified_dataset(cfg.dataset_uri)
    device = configure_torch(hp, env, dataset.x.shape[1:])
    log.info("dataset verified", extra={"fields": {"dataset_uri": cfg.dataset_uri, "rows": len(dataset.y),
                                                   "manifest_sha256": dataset.manifest.sha256}})
    trainer = Trainer(hp, *split(dataset, hp.seed), num_classes=dataset.num_classes, device=device)
    checkpointer = Checkpointer(cfg.checkpoint_dir, {"run_id": cfg.run_id, "hyperparameters": hp.as_dict(),
                                                     "manifest_sha256": dataset.manifest.sha256})
    checkpoint = checkpointer.load_latest()
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint["trainer"])
        outcome.resumed_from_epoch = int(checkpoint["epoch"])
        log.info("resuming from checkpoint", extra={"fields": {"epoch": outcome.resumed_from_epoch}})
    tracker = Tracker(cfg)
    try:
        outcome.mlflow_run_id = tracker.start(checkpoint["mlflow_run_id"] if checkpoint else None, dataset)
        log.info("training", extra={"fields": {"device": str(device), "hyperparameters": hp.as_dict(),
                                               "mlflow_run_id": outcome.mlflow_run_id}})
        for metrics in trainer.progress.history:  # epochs trained before a restart MLflow may lack
            tracker.record_epoch(metrics)

        progress = trainer.fit(epoch_callback(tracker, checkpointer, outcome, log))
        outcome.epochs_completed = progress.epoch
        tracker.flush()
        with tempfile.TemporaryDirectory(prefix="ctflow-model-") as tmp:
            local = Path(tmp)
            scripted = export_model(trainer.best_model(), local, hp=hp, input_shape=trainer.input_shape,
                                    num_classes=trainer.num_classes, pipeline=cfg.pipeline, run_id=cfg.run_id)
            model_size = (local / TORCHSCRIPT_FILE).stat().st_size
            uris.upload_dir(local, cfg.model_dir)
            outcome.artifact_uri = tracker.log_model_files(local)
            outcome.mlflow_model_uri = tracker.log_mlflow_model(scripted, dataset.x[:2], trainer.num_classes)
        if cfg.tensorboard_dir and not write_tensorboard(progress.history, cfg.tensorboard_dir):
            log.warning("AIP_TENSORBOARD_LOG_DIR is set but the tensorboard package is not installed")
        best = progress.best
        outcome.metrics = {
            "val_accuracy": best["val_accuracy"], "val_loss": best["val_loss"],
            "epochs_completed": progress.epoch, "best_epoch": progress.best_epoch,
            "train_seconds": round(progress.train_seconds, 4), "model_size_bytes": model_size,
        }
        summary = {("best_" + k if k.startswith("val_") else k): v for k, v in outcome.metrics.items()}
        tracker.finish("FINISHED", summary)
    except Exception:  # not on SIGINT: an interrupted job resumes into the same run
        try:
            tracker.finish("FAILED")
        except Exception as exc:
            log.warning("could not mark the MLflow run failed: %s", exc)
        raise
