"""The completion-handler's assessment (champion and challenger measured on the pinned holdout, the gate,
the evaluation run and the registration), without a database or MLflow: the in-memory registry, a local
bucket folder and real TorchScript models as the trainer exports them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from completion_handler.assessment import assess_with
from completion_handler.evaluation import EvaluationError
from completion_handler.lease import EvaluationTask
from ctflow.blobstore.local import LocalFolderBlobStore
from ctflow.ledger.leases import Lease
from ctflow.pipelines import load_spec
from ctflow.registry import CHALLENGER, CHAMPION
from ctflow.sample_data import digits_arrays, publish_digits_holdout
from ctflow.settings import REPO_ROOT
from ctflow_trainer.config import Hyperparameters
from ctflow_trainer.export import export_model
from ctflow_trainer.models import build_model
from tests.fakes.registry import InMemoryModelRegistry

SPEC = load_spec(REPO_ROOT / "deploy" / "pipelines" / "digits.yaml")


def _model(tmp_path: Path, name: str, *, trained: bool) -> Path:
    """A model folder as the trainer leaves it: an MLP, fitted to the digits or left at its random start."""
    torch.manual_seed(0)
    hp = Hyperparameters()
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden_units=64, dropout=0.0)
    if trained:
        x, y = digits_arrays()
        inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(60):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs), labels).backward()
            optimizer.step()
    folder = tmp_path / name / "model"
    export_model(model, folder, hp=hp, input_shape=(1, 8, 8), num_classes=10, pipeline="digits", run_id=name)
    return folder


def _task(run_id: str, mlflow_run_id: str) -> EvaluationTask:
    return EvaluationTask(
        run_id=run_id,
        pipeline="digits",
        lease=Lease(f"evaluate:{run_id}", "token", datetime.now(UTC), 1),
        mlflow_run_id=mlflow_run_id,
        hyperparameters={},
        dataset_version="v1",
        dataset=None,
        trigger={"kind": "dataset", "event_id": "evt", "source": "//storage"},
        job=None,
        completion={},
    )


@pytest.fixture
def world(tmp_path):  # type: ignore[no-untyped-def]
    """(registry, bucket, add_run) with the pinned digits holdout in the bucket."""
    registry, blobs = InMemoryModelRegistry(), LocalFolderBlobStore(tmp_path / "bucket")
    publish_digits_holdout(SPEC, blobs)

    def add_run(run_id: str, *, trained: bool) -> str:
        folder = _model(tmp_path, run_id, trained=trained)
        run = registry.add_training_run(tags={"ctflow.run_id": run_id}, artifact_uri=f"file://{folder.parent}")
        registry.add_artifacts(run.model_files_uri, folder)
        return run.run_id

    return registry, blobs, add_run


def test_a_good_first_model_passes_the_gate_and_is_registered_as_challenger(world, tmp_path):
    registry, blobs, add_run = world
    task = _task("digits-good", add_run("digits-good", trained=True))
    assessment = assess_with(task, SPEC, blobs=blobs, registry=registry, home=tmp_path / "home")
    assert assessment.verdict.passed and assessment.champion is None
    assert assessment.challenger.accuracy > 0.9 and assessment.version is not None
    assert registry.by_alias("digits", CHALLENGER).version == assessment.version.version
    logged = registry.logged[assessment.evaluation_run_id]
    assert logged.tags["ctflow.gate"] == "passed" and "confusion_matrix.json" in logged.documents
    assert not any((tmp_path / "home" / "scratch" / "evaluation").iterdir())  # model copies cleaned up


def test_a_challenger_worse_than_the_champion_is_rejected_and_not_registered(world, tmp_path):
    registry, blobs, add_run = world
    good = assess_with(
        _task("digits-good", add_run("digits-good", trained=True)), SPEC, blobs=blobs, registry=registry, home=tmp_path
    )
    registry.set_alias("digits", CHAMPION, good.version.version)
    poor = assess_with(
        _task("digits-poor", add_run("digits-poor", trained=False)), SPEC, blobs=blobs, registry=registry, home=tmp_path
    )
    assert not poor.verdict.passed and poor.version is None and poor.champion is not None
    assert any("accuracy" in reason for reason in poor.verdict.reasons)
    assert len(registry.by_name["digits"]) == 1


def test_a_run_that_is_not_this_runs_or_not_there_fails_the_evaluation(world, tmp_path):
    registry, blobs, add_run = world
    someone_elses = add_run("digits-other", trained=True)
    with pytest.raises(EvaluationError, match="belongs to ctflow run 'digits-other'"):
        assess_with(_task("digits-mine", someone_elses), SPEC, blobs=blobs, registry=registry, home=tmp_path)
    with pytest.raises(EvaluationError, match="does not exist"):
        assess_with(_task("digits-mine", "no-such-run"), SPEC, blobs=blobs, registry=registry, home=tmp_path)


def test_the_holdout_must_be_the_pinned_one(world, tmp_path):
    registry, blobs, add_run = world
    holdout = tmp_path / "bucket" / SPEC.holdout.uri
    holdout.write_bytes(holdout.read_bytes() + b"\0")
    with pytest.raises(EvaluationError, match="holdout"):
        assess_with(
            _task("digits-good", add_run("digits-good", trained=True)),
            SPEC,
            blobs=blobs,
            registry=registry,
            home=tmp_path,
        )
