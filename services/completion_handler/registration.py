"""What an evaluation leaves in MLflow: the evaluation run, and the model version with its lineage.

The version's source is the training run's `model/` folder (model.pt TorchScript,
state_dict.pt, model_config.json): exactly what the TorchServe deployer packages into
a model archive, with no MLflow flavour to unwrap. The MLflow model the trainer also
logged (signature, input example) is named in the tag `ctflow.mlflow_model_uri`, and
the concrete folder URI in `ctflow.model_files_uri`.

Lineage comes from the ledger run (dataset version and generation, trigger,
hyperparameters the trainer resolved) and from the tags the trainer put on its MLflow
run (what it verified and where it ran: manifest hash, dataset URI, git sha, image
digest, job id); see docs/completion-handler.md for the full list.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ctflow.ledger.records import DatasetRef, JobRecord, Lineage
from ctflow.registry import CHALLENGER, TAG_PREFIX

from .lease import EvaluationTask

if TYPE_CHECKING:
    from ctflow.registry import ModelRegistry, ModelVersionRef, TrainingRun

    from .evaluation import Holdout, ModelMetrics
    from .gate import Verdict


def evaluations_experiment(pipeline: str) -> str:
    return f"{pipeline}-evaluations"


def log_evaluation(
    registry: ModelRegistry,
    task: EvaluationTask,
    holdout: Holdout,
    challenger: ModelMetrics,
    champion: tuple[ModelVersionRef, ModelMetrics] | None,
    verdict: Verdict,
) -> str:
    """One MLflow run per evaluation attempt: both models' metrics, confusion matrices, the verdict."""
    metrics = {f"challenger.{k}": v for k, v in challenger.scalars().items()}
    matrices: dict[str, Any] = {
        "rows": "true class",
        "columns": "predicted class",
        "challenger": challenger.confusion_matrix,
    }
    if champion is not None:
        metrics.update({f"champion.{k}": v for k, v in champion[1].scalars().items()})
        matrices["champion"] = champion[1].confusion_matrix
    metrics["holdout.samples"] = float(len(holdout.y))
    tags = _tags(
        run_id=task.run_id,
        pipeline=task.pipeline,
        holdout_sha256=holdout.sha256,
        holdout_uri=holdout.uri,
        challenger_mlflow_run_id=task.mlflow_run_id,
        champion_version=champion[0].version if champion else "none",
        gate="passed" if verdict.passed else "rejected",
        attempt=task.lease.claims,
    )
    return registry.log_run(
        evaluations_experiment(task.pipeline),
        run_name=f"evaluate-{task.run_id}",
        tags=tags,
        metrics=metrics,
        documents={
            "confusion_matrix.json": matrices,
            "gate.json": {"passed": verdict.passed, "reasons": list(verdict.reasons)},
        },
    )


def register(
    registry: ModelRegistry,
    task: EvaluationTask,
    training: TrainingRun,
    *,
    hyperparameters: dict[str, Any],
    holdout: Holdout,
    evaluation_run_id: str,
    champion_version: str | None,
) -> ModelVersionRef:
    """The run's one model version (created, or found from an attempt a crash interrupted)."""
    tags = lineage_tags(
        task,
        training,
        hyperparameters=hyperparameters,
        holdout=holdout,
        evaluation_run_id=evaluation_run_id,
        champion_version=champion_version,
    )
    version = registry.register(
        task.pipeline, run_id=task.run_id, source=training.model_files_uri, mlflow_run_id=training.run_id, tags=tags
    )
    current = registry.by_alias(task.pipeline, CHALLENGER)
    if current is None or int(current.version) <= int(version.version):  # never back to an older version
        registry.set_alias(task.pipeline, CHALLENGER, version.version)
    return version


def lineage_tags(
    task: EvaluationTask,
    training: TrainingRun,
    *,
    hyperparameters: dict[str, Any],
    holdout: Holdout,
    evaluation_run_id: str,
    champion_version: str | None,
) -> dict[str, str]:
    trained = training.tags
    dataset: DatasetRef | dict[str, Any] = task.dataset or {}
    job: JobRecord | dict[str, Any] = task.job or {}
    code: Lineage = job.get("lineage") or {}
    return _tags(
        run_id=task.run_id,
        pipeline=task.pipeline,
        hyperparameters=json.dumps(hyperparameters, sort_keys=True),
        dataset_version=task.dataset_version or dataset.get("version"),
        dataset_generation=dataset.get("generation"),
        manifest_sha256=trained.get(f"{TAG_PREFIX}manifest_sha256") or dataset.get("manifest_sha256"),
        dataset_uri=trained.get(f"{TAG_PREFIX}dataset_uri") or dataset.get("uri"),
        trigger_event_id=trained.get(f"{TAG_PREFIX}trigger_event_id") or task.trigger.get("event_id"),
        code_version=trained.get(f"{TAG_PREFIX}code_version") or code.get("code_version"),
        git_sha=trained.get(f"{TAG_PREFIX}git_sha") or code.get("git_sha"),
        trainer_image=code.get("trainer_image"),
        image_digest=trained.get(f"{TAG_PREFIX}image_digest") or code.get("image_digest"),
        job_id=task.completion.get("job_id") or trained.get(f"{TAG_PREFIX}job_id") or job.get("job_id"),
        mlflow_run_id=training.run_id,
        evaluation_run_id=evaluation_run_id,
        holdout_sha256=holdout.sha256,
        champion_version=champion_version or "none",
        model_files_uri=training.model_files_uri,
        mlflow_model_uri=task.completion.get("mlflow_model_uri"),
    )


def _tags(**values: Any) -> dict[str, str]:
    """`ctflow.`-prefixed string tags; unknown (None or empty) values are left out, not faked."""
    return {f"{TAG_PREFIX}{k}": str(v) for k, v in values.items() if v not in (None, "")}
