"""The jobs of a sweep start together and log the same dataset into one MLflow experiment."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ctflow_trainer.config import JobConfig
from ctflow_trainer.data import load_verified_dataset
from ctflow_trainer.tracking import Tracker


@pytest.fixture
def fresh_mlflow(tmp_path: Path) -> str:
    """An MLflow store that has never seen the dataset."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("digits", artifact_location=str(tmp_path / "artifacts"))
    return uri


def _tracker(uri: str, digits_version: Path) -> Tracker:
    run_id = f"run-{uuid.uuid4().hex[:10]}"
    return Tracker(
        JobConfig.from_env(
            {
                "CTFLOW_RUN_ID": run_id,
                "CTFLOW_PIPELINE": "digits",
                "CTFLOW_DATASET_URI": str(digits_version),
                "CTFLOW_HYPERPARAMETERS": "{}",
                "MLFLOW_TRACKING_URI": uri,
            }
        )
    )


def _dataset_inputs(uri: str, run_id: str) -> list[str]:
    return [d.dataset.digest for d in MlflowClient(uri).get_run(run_id).inputs.dataset_inputs]


def test_sweep_jobs_starting_together_all_log_the_dataset(fresh_mlflow: str, digits_version: Path):
    """Six jobs start at once on one dataset: every one starts, and each run has the dataset as input."""
    dataset = load_verified_dataset(str(digits_version))
    trackers = [_tracker(fresh_mlflow, digits_version) for _ in range(6)]
    together = threading.Barrier(len(trackers))

    def start(tracker: Tracker) -> str:
        together.wait()
        return tracker.start(None, dataset)

    with ThreadPoolExecutor(len(trackers)) as pool:
        run_ids = list(pool.map(start, trackers))
    digests = {digest for run_id in run_ids for digest in _dataset_inputs(fresh_mlflow, run_id)}
    assert len(set(run_ids)) == 6 and len(digests) == 1


def test_a_collision_with_another_jobs_insert_is_retried(
    fresh_mlflow: str, digits_version: Path, monkeypatch: pytest.MonkeyPatch
):
    """What MLflow raises when another job inserted the dataset between its look-up and its insert:
    the job links its run to the other job's dataset instead of failing."""
    dataset = load_verified_dataset(str(digits_version))
    first = _tracker(fresh_mlflow, digits_version)
    first_run = first.start(None, dataset)
    second = _tracker(fresh_mlflow, digits_version)
    real_log_inputs, calls = second.client.log_inputs, []

    def collides_once(run_id, datasets):  # type: ignore[no-untyped-def]
        calls.append(run_id)
        if len(calls) == 1:
            raise MlflowException(
                "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                "datasets.name, datasets.digest",
                error_code="BAD_REQUEST",
            )
        return real_log_inputs(run_id, datasets=datasets)

    monkeypatch.setattr(second.client, "log_inputs", collides_once)
    second_run = second.start(None, dataset)
    assert len(calls) == 2
    assert _dataset_inputs(fresh_mlflow, second_run) == _dataset_inputs(fresh_mlflow, first_run)


def test_a_lasting_failure_is_raised_after_a_few_attempts(
    fresh_mlflow: str, digits_version: Path, monkeypatch: pytest.MonkeyPatch
):
    tracker = _tracker(fresh_mlflow, digits_version)
    calls = []

    def always_fails(run_id, datasets):  # type: ignore[no-untyped-def]
        calls.append(run_id)
        raise MlflowException("tracking server unavailable")

    monkeypatch.setattr(tracker.client, "log_inputs", always_fails)
    with pytest.raises(MlflowException, match="unavailable"):
        tracker.start(None, load_verified_dataset(str(digits_version)))
    assert len(calls) == 3
