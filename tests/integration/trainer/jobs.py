"""Helpers for trainer job tests: read what a job left behind, query MLflow for its run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def completion(env: dict[str, str]) -> dict[str, Any]:
    """The structured CloudEvent the job left in its model folder."""
    return json.loads((Path(env["AIP_MODEL_DIR"]) / "completion.json").read_bytes())


def mlflow_runs(env: dict[str, str]) -> list[Any]:
    """Every MLflow run tagged with the job's ctflow run id."""
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("digits")
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`ctflow.run_id` = '{env['CTFLOW_RUN_ID']}'"
    )


def curve(env: dict[str, str], run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    history = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)
