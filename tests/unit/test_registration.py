"""Registering an evaluated model (completion_handler.registration) against the in-memory registry: the
lineage every version carries, one version per run, and the challenger alias never moving back."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from completion_handler import registration
from completion_handler.evaluation import Holdout
from completion_handler.lease import EvaluationTask
from ctflow.ledger.leases import Lease
from ctflow.registry import CHALLENGER
from tests.fakes.registry import InMemoryModelRegistry

HOLDOUT = Holdout("file:///holdout.npz", "h" * 64, np.zeros((2, 1, 8, 8), np.float32), np.zeros(2, np.int64))


def _task(run_id: str, *, job_lineage: dict | None = None) -> EvaluationTask:
    return EvaluationTask(
        run_id=run_id,
        pipeline="digits",
        lease=Lease(f"evaluate:{run_id}", "token", datetime.now(UTC), 1),
        mlflow_run_id=f"mlflow-{run_id}",
        hyperparameters={"lr": 0.01},
        dataset_version="v1",
        dataset={
            "version": "v1",
            "uri": "file:///bucket/datasets/digits/v1",
            "manifest_uri": "file:///bucket/datasets/digits/v1/_MANIFEST.json",
            "manifest_sha256": "m" * 64,
            "generation": "7",
            "bucket": "local-bucket",
            "total_bytes": 10,
            "files": [],
        },
        trigger={"kind": "dataset", "event_id": "evt-1", "source": "//storage"},
        job={"state": "succeeded", "job_id": f"local/{run_id}/1", "lineage": job_lineage or {}},
        completion={"job_id": f"local/{run_id}/1", "mlflow_model_uri": f"runs:/mlflow-{run_id}/mlflow-model"},
    )


def _register(registry: InMemoryModelRegistry, task: EvaluationTask, trainer_tags: dict[str, str]):  # type: ignore[no-untyped-def]
    training = registry.add_training_run(tags=trainer_tags, artifact_uri=f"file:///mlartifacts/{task.run_id}")
    return registration.register(
        registry,
        task,
        training,
        hyperparameters=task.hyperparameters,
        holdout=HOLDOUT,
        evaluation_run_id="eval-1",
        champion_version=None,
    )


def test_a_version_carries_the_lineage_of_its_data_code_and_evaluation():
    """The trainer's own tags win; what it could not know (the launch's code version, image) comes from the run."""
    registry = InMemoryModelRegistry()
    lineage = {
        "code_version": "0.1.0",
        "git_sha": "launcher-sha",
        "trainer_image": "img@sha256:abc",
        "image_digest": "sha256:abc",
    }
    version = _register(registry, _task("digits-1", job_lineage=lineage), {"ctflow.git_sha": "trainer-sha"})
    tags = version.tags
    assert tags["ctflow.git_sha"] == "trainer-sha"  # what the trainer saw of itself
    assert (tags["ctflow.code_version"], tags["ctflow.image_digest"]) == ("0.1.0", "sha256:abc")
    assert tags["ctflow.trainer_image"] == "img@sha256:abc"
    assert (tags["ctflow.dataset_version"], tags["ctflow.dataset_generation"]) == ("v1", "7")
    assert tags["ctflow.manifest_sha256"] == "m" * 64 and tags["ctflow.trigger_event_id"] == "evt-1"
    assert (tags["ctflow.job_id"], tags["ctflow.evaluation_run_id"]) == ("local/digits-1/1", "eval-1")
    assert tags["ctflow.holdout_sha256"] == "h" * 64 and tags["ctflow.champion_version"] == "none"
    assert version.source == "file:///mlartifacts/digits-1/model"


def test_unknown_lineage_is_left_out_not_faked():
    """No lineage recorded and none tagged: no empty or made-up code tags."""
    version = _register(InMemoryModelRegistry(), _task("digits-1"), {})
    assert not {"ctflow.git_sha", "ctflow.code_version", "ctflow.image_digest"} & set(version.tags)


def test_registering_again_finds_the_version_and_the_challenger_never_moves_back():
    """A retried registration is the same version; an older run registered late does not take the alias."""
    registry = InMemoryModelRegistry()
    first = _register(registry, _task("digits-1"), {})
    newer = _register(registry, _task("digits-2"), {})
    assert registry.by_alias("digits", CHALLENGER).version == newer.version == "2"
    again = _register(registry, _task("digits-1"), {})
    assert again.version == first.version == "1" and len(registry.by_name["digits"]) == 2
    assert registry.by_alias("digits", CHALLENGER).version == "2"
