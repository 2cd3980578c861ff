"""One evaluation, start to verdict: challenger and champion on the holdout, the gate, registration.

Runs outside any ledger transaction, under the run's lease (see lease.py). Checks
first that the MLflow run really is this run's training (its `ctflow.run_id` tag) and
that it trained on the dataset the ledger recorded (manifest hash), since the model
version's lineage is built from both. Imported only when an evaluation runs: it pulls
in torch and mlflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ctflow.blobstore import BlobStore
from ctflow.contracts import PipelineSpec
from ctflow.deps import Dependencies
from ctflow.ledger.records import EvaluationRecord
from ctflow.registry import TAG_PREFIX, ModelRegistry, ModelVersionRef, NotFound, TrainingRun
from ctflow.scratch import scratch_dir

from . import registration
from .evaluation import EvaluationError, Holdout, ModelMetrics, load_holdout, measure, read_config
from .gate import Champion, Verdict, judge
from .lease import LEASE, EvaluationTask


@dataclass(frozen=True)
class Assessment:
    holdout: Holdout
    challenger: ModelMetrics
    champion: tuple[ModelVersionRef, ModelMetrics] | None
    verdict: Verdict
    evaluation_run_id: str
    version: ModelVersionRef | None  # registered when the verdict passed

    @property
    def champion_version(self) -> str | None:
        return self.champion[0].version if self.champion else None

    def summary(self) -> EvaluationRecord:
        """What the ledger keeps as the run's `evaluation` (confusion matrices stay in MLflow)."""
        return {
            "status": "done",
            "holdout": {"uri": self.holdout.uri, "sha256": self.holdout.sha256, "samples": len(self.holdout.y)},
            "challenger": self.challenger.scalars(),
            "champion": {"version": self.champion[0].version, **self.champion[1].scalars()} if self.champion else None,
            "gate": {"passed": self.verdict.passed, "reasons": list(self.verdict.reasons)},
            "evaluation_run_id": self.evaluation_run_id,
        }


def assess(deps: Dependencies, task: EvaluationTask) -> Assessment:
    spec = deps.pipelines.get(task.pipeline)
    if spec is None:
        raise EvaluationError(f"pipeline {task.pipeline!r} has no spec any more: no holdout or gate to apply")
    return assess_with(task, spec, blobs=deps.blobs, registry=deps.registry, home=deps.settings.home)


def assess_with(
    task: EvaluationTask, spec: PipelineSpec, *, blobs: BlobStore, registry: ModelRegistry, home: Path
) -> Assessment:
    """The assessment from the ports it needs (unit tests give it the in-memory registry)."""
    holdout = load_holdout(spec.holdout, blobs)
    training = _training_run(registry, task)
    champion_ref = registry.champion(task.pipeline)
    # Under the home: a process killed mid-evaluation leaves its model copies where the next evaluation
    # removes them (once older than the lease, so never a live evaluation's).
    with scratch_dir(home, "evaluation", stale_after=LEASE) as tmp:
        challenger_dir, challenger = _measure(
            registry, training.model_files_uri, Path(tmp, "challenger"), holdout, "the challenger"
        )
        hyperparameters = read_config(challenger_dir).get("hyperparameters") or task.hyperparameters
        champion = None
        if champion_ref is not None:
            _, theirs = _measure(
                registry,
                champion_ref.source,
                Path(tmp, "champion"),
                holdout,
                f"champion version {champion_ref.version}",
            )
            champion = (champion_ref, theirs)
    verdict = judge(
        spec.evaluation,
        challenger.scalars(),
        Champion(champion[0].version, champion[1].scalars()) if champion else None,
    )
    evaluation_run_id = registration.log_evaluation(registry, task, holdout, challenger, champion, verdict)
    version = None
    if verdict.passed:
        version = registration.register(
            registry,
            task,
            training,
            hyperparameters=hyperparameters,
            holdout=holdout,
            evaluation_run_id=evaluation_run_id,
            champion_version=champion_ref.version if champion_ref else None,
        )
    return Assessment(holdout, challenger, champion, verdict, evaluation_run_id, version)


def _training_run(registry: ModelRegistry, task: EvaluationTask) -> TrainingRun:
    if not task.mlflow_run_id:
        raise EvaluationError(f"run {task.run_id} has no MLflow run to evaluate")
    try:
        training = registry.training_run(task.mlflow_run_id)
    except NotFound as exc:
        raise EvaluationError(f"the trainer reported {exc}") from None
    tagged = training.tags.get(f"{TAG_PREFIX}run_id")
    if tagged != task.run_id:
        raise EvaluationError(f"MLflow run {training.run_id} belongs to ctflow run {tagged!r}, not {task.run_id}")
    trained_on = training.tags.get(f"{TAG_PREFIX}manifest_sha256")
    recorded = task.dataset["manifest_sha256"] if task.dataset else None
    if trained_on and recorded and trained_on != recorded:
        raise EvaluationError(
            f"the trainer verified dataset manifest {trained_on}, but the run recorded {recorded}: "
            "the dataset changed after it arrived, so the model's lineage is unknown"
        )
    return training


def _measure(registry: ModelRegistry, uri: str, dest: Path, holdout: Holdout, what: str) -> tuple[Path, ModelMetrics]:
    """Download a model folder and measure it; a permanent problem names the model it is about."""
    try:
        folder = registry.download(uri, dest)
        return folder, measure(folder, holdout)
    except (NotFound, EvaluationError) as exc:
        raise EvaluationError(f"{what}: {exc}") from None
