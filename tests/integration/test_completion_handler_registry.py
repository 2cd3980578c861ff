"""The MLflow registry port on a real MLflow store: one version per run, aliases, compare-and-swap moves."""

from __future__ import annotations

import sqlite3

import pytest

from ctflow.registry import AliasMoved, NotFound
from ctflow.registry.mlflow_registry import MlflowModelRegistry
from ctflow.settings import Settings
from tests.integration.test_completion_handler import trained_models  # noqa: F401 - fixtures


@pytest.fixture
def registry(tmp_path, trained) -> MlflowModelRegistry:  # type: ignore[no-untyped-def]
    """A registry over this test's copy of the trained runs' MLflow store."""
    with sqlite3.connect(trained.mlflow_db) as source, sqlite3.connect(tmp_path / "mlflow.db") as copy:
        source.backup(copy)
    return MlflowModelRegistry(Settings(home=tmp_path), artifact_root=tmp_path / "mlartifacts")


@pytest.fixture
def register(registry, trained):  # type: ignore[no-untyped-def]
    """Register the good model's files for a given ctflow run id."""
    training = registry.training_run(trained.data("good")["mlflow_run_id"])

    def for_run(run_id: str, **tags: str):  # type: ignore[no-untyped-def]
        return registry.register(
            "digits", run_id=run_id, source=training.model_files_uri, mlflow_run_id=training.run_id, tags=tags
        )

    return for_run


def test_one_version_per_run_however_often_it_is_registered(registry, register):
    """Registering a run again returns its version; another run gets the next version."""
    first = register("run-a", **{"ctflow.git_sha": "aaa"})
    assert register("run-a", **{"ctflow.git_sha": "aaa"}).version == first.version == "1"
    assert register("run-b").version == "2"
    stored = registry.client.search_model_versions("name = 'digits'")
    assert sorted((str(v.version), v.tags["ctflow.run_id"]) for v in stored) == [("1", "run-a"), ("2", "run-b")]


def test_move_alias_swaps_only_from_the_expected_version(registry, register):
    """A move succeeds from the expected version (or from unset), repeats harmlessly, and is refused with the
    alias left alone when someone else moved it first."""
    for run in ("run-a", "run-b", "run-c"):
        register(run)
    registry.move_alias("digits", "champion", "1", expected_current=None)
    registry.move_alias("digits", "champion", "2", expected_current="1")
    registry.move_alias("digits", "champion", "2", expected_current="1")  # a retry after the write landed
    with pytest.raises(AliasMoved, match="alias champion of digits points to version 2, not 1 as expected"):
        registry.move_alias("digits", "champion", "3", expected_current="1")
    with pytest.raises(AliasMoved, match=r"points to version 2, not \(none\)"):
        registry.move_alias("digits", "champion", "3", expected_current=None)
    assert registry.champion("digits").version == "2"


def test_missing_runs_and_artifacts_are_not_found_errors(registry, tmp_path):
    """What a person must fix (a run or files that do not exist) is told apart from MLflow being down."""
    with pytest.raises(NotFound, match="MLflow run 0+ does not exist"):
        registry.training_run("0" * 32)
    with pytest.raises(NotFound, match="no artifacts at"):
        registry.download((tmp_path / "nowhere" / "model").as_uri(), tmp_path / "dest")
    assert registry.champion("no-such-pipeline") is None
