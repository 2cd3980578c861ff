"""One specification of the registry port, held by the MLflow adapter (real MLflow on SQLite) and by the
in-memory fake that unit tests of handlers use: what the fake promises, MLflow does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ctflow.registry import CHALLENGER, CHAMPION, RUN_TAG, AliasMoved, ModelRegistry, NotFound
from tests.fakes.registry import InMemoryModelRegistry


@pytest.fixture(params=["in-memory", "mlflow"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelRegistry]:
    if request.param == "in-memory":
        yield InMemoryModelRegistry()
        return
    from ctflow.registry.mlflow_registry import MlflowModelRegistry
    from ctflow.settings import Settings

    yield MlflowModelRegistry(Settings(home=tmp_path), artifact_root=tmp_path / "mlartifacts")


def _register(registry: ModelRegistry, run_id: str, **tags: str):  # type: ignore[no-untyped-def]
    return registry.register(
        "digits", run_id=run_id, source=f"file:///models/{run_id}", mlflow_run_id="", tags={"ctflow.k": "v", **tags}
    )


def test_a_run_has_one_version_found_again_by_its_tag_with_its_tags_brought_up_to_date(registry):
    first = _register(registry, "run-a")
    again = _register(registry, "run-a", **{"ctflow.evaluation_run_id": "e2"})
    other = _register(registry, "run-b")
    assert (first.version, again.version, other.version) == ("1", "1", "2")
    assert again.tags[RUN_TAG] == "run-a" and again.tags["ctflow.evaluation_run_id"] == "e2"
    assert first.name == "digits" and first.source == "file:///models/run-a"


def test_aliases_are_unset_until_set_and_champion_is_its_alias(registry):
    _register(registry, "run-a")
    assert registry.by_alias("digits", CHALLENGER) is None and registry.champion("digits") is None
    registry.set_alias("digits", CHAMPION, "1")
    champion = registry.champion("digits")
    assert champion is not None and champion.version == "1" and champion.tags[RUN_TAG] == "run-a"
    assert registry.by_alias("elsewhere", CHAMPION) is None  # a pipeline with no registered model


def test_moving_an_alias_is_compare_and_swap(registry):
    """From unset, then from where it points; refused (and left alone) when it points elsewhere; moving it
    where it already points succeeds (a retry of a move that landed)."""
    for run in ("run-a", "run-b", "run-c"):
        _register(registry, run)
    registry.move_alias("digits", CHAMPION, "1", expected_current=None)
    registry.move_alias("digits", CHAMPION, "2", expected_current="1")
    with pytest.raises(AliasMoved, match="points to version 2, not 1"):
        registry.move_alias("digits", CHAMPION, "3", expected_current="1")
    assert registry.champion("digits").version == "2"
    registry.move_alias("digits", CHAMPION, "2", expected_current="1")  # already there: a retry
    with pytest.raises(AliasMoved):
        registry.move_alias("digits", CHALLENGER, "3", expected_current="1")  # unset, not 1


def test_what_is_not_there_is_not_found(registry, tmp_path):
    with pytest.raises(NotFound):
        registry.training_run("0123456789abcdef0123456789abcdef")
    with pytest.raises(NotFound):
        registry.download((tmp_path / "nothing-here").as_uri(), tmp_path / "dest")


def test_experiments_and_logged_runs(registry):
    assert registry.ensure_experiment("digits-evaluations") == registry.ensure_experiment("digits-evaluations")
    run_id = registry.log_run(
        "digits-evaluations", run_name="evaluate-x", tags={"ctflow.run_id": "x"}, metrics={"m": 1.0}, documents={}
    )
    assert isinstance(run_id, str) and run_id


def test_versions_are_listed_newest_first_and_found_one_by_one(registry):
    assert registry.versions("digits") == []
    for run in ("run-a", "run-b"):
        _register(registry, run)
    assert [ref.version for ref in registry.versions("digits")] == ["2", "1"]
    assert registry.version("digits", "1").tags[RUN_TAG] == "run-a"
    with pytest.raises(NotFound):
        registry.version("digits", "9")
