"""A retrain's hyperparameters (job_launcher.retrain), on the in-memory registry: the champion's over the spec's
defaults, or the defaults with the reason when there is no champion or its values break today's schema."""

from __future__ import annotations

import json

from ctflow.pipelines import PipelineCatalog
from ctflow.registry import CHAMPION
from job_launcher.retrain import retrain_hyperparameters
from tests.fakes.registry import InMemoryModelRegistry


def _champion(registry: InMemoryModelRegistry, hyperparameters: dict) -> None:
    tags = {"ctflow.hyperparameters": json.dumps(hyperparameters)}
    version = registry.register("digits", run_id="digits-1", source="file:///m", mlflow_run_id="r", tags=tags)
    registry.set_alias("digits", CHAMPION, version.version)


def test_no_champion_means_the_spec_defaults(pipelines_dir):
    catalog = PipelineCatalog(pipelines_dir)
    spec = catalog.get("digits")
    chosen, source = retrain_hyperparameters(InMemoryModelRegistry(), catalog, spec)
    assert chosen == spec.hyperparameters.defaults and source == "spec defaults (no champion yet)"


def test_the_champions_hyperparameters_are_laid_over_the_defaults(pipelines_dir):
    """A hyperparameter the spec added since the champion trained gets its default."""
    catalog, registry = PipelineCatalog(pipelines_dir), InMemoryModelRegistry()
    spec = catalog.get("digits")
    _champion(registry, {"lr": 0.01, "epochs": 12})
    chosen, source = retrain_hyperparameters(registry, catalog, spec)
    assert chosen == {**spec.hyperparameters.defaults, "lr": 0.01, "epochs": 12} and source == "champion v1"


def test_a_champion_whose_values_break_todays_schema_gives_way_to_the_defaults(pipelines_dir):
    catalog, registry = PipelineCatalog(pipelines_dir), InMemoryModelRegistry()
    spec = catalog.get("digits")
    _champion(registry, {"epochs": 10_000})
    chosen, source = retrain_hyperparameters(registry, catalog, spec)
    assert chosen == spec.hyperparameters.defaults
    assert source.startswith("spec defaults (champion v1's hyperparameters break the schema") and "epochs" in source
