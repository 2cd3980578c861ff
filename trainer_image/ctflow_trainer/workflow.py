"""The steps of one training job, in order, wired together (the composition root).

Verify the dataset, restore the latest checkpoint, open the MLflow run, train with
per-epoch checkpoints and curves, export the model to `AIP_MODEL_DIR` and MLflow,
close the run. Progress goes into the `Outcome` as it happens. Imported only when a
job runs: it pulls in torch and mlflow.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ctflow_trainer import uris
from ctflow_trainer.config import ConfigError, JobConfig
from ctflow_trainer.outcome import Outcome


def epoch_callback(tracker: Any, checkpointer: Any, outcome: Outcome, log: Any) -> Any:
    """What happens after every epoch: queue the curves for MLflow, checkpoint, log a line."""
    from ctflow_trainer.logs import EpochLines

    epoch_line = EpochLines(log)

    def on_epoch_end(trainer: Any, metrics: dict[str, float]) -> None:
        epoch, finished = trainer.progress.epoch, trainer.progress.finished
        outcome.epochs_completed = epoch
        tracker.curves.record(metrics)
        checkpointer.maybe_save(epoch, trainer.state_dict, tracker.run_id, force=finished)
        epoch_line(epoch, metrics, last=finished)

    return on_epoch_end


def train(cfg: JobConfig, env: Mapping[str, str], outcome: Outcome, log: Any) -> None:
    if not cfg.model_dir:
        raise ConfigError("environment variable AIP_MODEL_DIR is required: the model goes there")
    from ctflow_trainer.export import write_tensorboard
    from ctflow_trainer.tracking import Tracker

    dataset, trainer, checkpointer, checkpoint = _prepare(cfg, env, outcome, log)
    tracker = Tracker(cfg)
    try:
        resume_run = checkpoint["mlflow_run_id"] if checkpoint else None
        outcome.mlflow_run_id = tracker.start(resume_run, dataset)
        fields = {
            "device": str(trainer.device),
            "hyperparameters": cfg.hyperparameters.as_dict(),
            "mlflow_run_id": outcome.mlflow_run_id,
        }
        log.info("training", extra={"fields": fields})
        for metrics in trainer.progress.history:  # epochs trained before a restart MLflow may lack
            tracker.curves.record(metrics)
        progress = trainer.fit(epoch_callback(tracker, checkpointer, outcome, log))
        outcome.epochs_completed = progress.epoch
        tracker.curves.flush()  # MLflow writes it while the model is exported
        best = progress.best  # nothing is exported from a training that diverged
        model_size = _export(cfg, trainer, tracker, dataset, outcome)
        if cfg.tensorboard_dir and not write_tensorboard(progress.history, cfg.tensorboard_dir):
            log.warning("AIP_TENSORBOARD_LOG_DIR is set but tensorboard is not installed")
        outcome.metrics = {
            "val_accuracy": best["val_accuracy"],
            "val_loss": best["val_loss"],
            "epochs_completed": progress.epoch,
            "best_epoch": progress.best_epoch,
            "train_seconds": round(progress.train_seconds, 4),
            "model_size_bytes": model_size,
        }
        # In MLflow `val_*` are the per-epoch curves; the chosen epoch's values are `best_val_*`.
        tracker.finish(
            "FINISHED",
            {k.replace("val_", "best_val_", 1) if k.startswith("val_") else k: v for k, v in outcome.metrics.items()},
        )
    except Exception:  # not on SIGINT: an interrupted job resumes into the same run
        try:
            tracker.finish("FAILED")
        except Exception as exc:
            log.warning("could not mark the MLflow run failed: %s", exc)
        raise


def _prepare(cfg: JobConfig, env: Mapping[str, str], outcome: Outcome, log: Any) -> tuple:
    """Verified dataset, a trainer on the right device, and the checkpoint to resume (or None)."""
    from ctflow_trainer.checkpoints import Checkpointer
    from ctflow_trainer.data import load_verified_dataset, split
    from ctflow_trainer.runtime import configure_torch
    from ctflow_trainer.training import Trainer

    hp = cfg.hyperparameters
    dataset = load_verified_dataset(cfg.dataset_uri)
    sha = dataset.manifest.sha256
    fields = {"dataset_uri": cfg.dataset_uri, "rows": len(dataset.y), "manifest_sha256": sha}
    log.info("dataset verified", extra={"fields": fields})
    device = configure_torch(hp, env, dataset.x.shape[1:])
    trainer = Trainer(hp, *split(dataset, hp.seed), num_classes=dataset.num_classes, device=device)
    identity = {"run_id": cfg.run_id, "hyperparameters": hp.as_dict(), "manifest_sha256": sha}
    checkpointer = Checkpointer(cfg.checkpoint_dir, identity)
    checkpoint = checkpointer.load_latest()
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint["trainer"])
        outcome.resumed_from_epoch = int(checkpoint["epoch"])
        log.info("resuming from checkpoint", extra={"fields": {"epoch": checkpoint["epoch"]}})
    return dataset, trainer, checkpointer, checkpoint


def _export(cfg: JobConfig, trainer: Any, tracker: Any, dataset: Any, outcome: Outcome) -> int:
    """Model files to AIP_MODEL_DIR and to MLflow (`model/` + an MLflow model); returns the size."""
    from ctflow_trainer.export import TORCHSCRIPT_FILE, export_model

    with tempfile.TemporaryDirectory(prefix="ctflow-model-") as tmp:
        local = Path(tmp)
        scripted = export_model(
            trainer.best_model(),
            local,
            hp=cfg.hyperparameters,
            input_shape=trainer.input_shape,
            num_classes=trainer.num_classes,
            pipeline=cfg.pipeline,
            run_id=cfg.run_id,
        )
        assert cfg.model_dir, "checked when the job started"
        uris.upload_dir(local, cfg.model_dir)
        outcome.artifact_uri = tracker.log_model_files(local)
        outcome.mlflow_model_uri = tracker.log_mlflow_model(scripted, dataset.x[:2], trainer.num_classes)
        return (local / TORCHSCRIPT_FILE).stat().st_size
