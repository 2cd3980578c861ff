"""Fixtures for trainer jobs against real MLflow (SQLite) and the bundled digits sample."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled digits (minus the holdout) as a dataset version folder."""
    from ctflow.sample_data import write_digits_dataset

    return write_digits_dataset(tmp_path_factory.mktemp("datasets") / "digits" / "v1", version="v1")


@pytest.fixture(scope="session")
def holdout_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ctflow.sample_data import write_digits_holdout

    path = tmp_path_factory.mktemp("holdout") / "holdout.npz"
    write_digits_holdout(path)
    return path


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Real MLflow on SQLite; the digits experiment keeps its artifacts in a temp folder."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("digits", artifact_location=str(root / "artifacts"))
    return uri


@pytest.fixture(autouse=True)
def _quiet_mlflow_and_keep_torch_threads(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """In-process jobs set torch's thread count; put it back for whatever runs next."""
    import torch

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def job_env(tmp_path: Path, digits_version: Path, mlflow_uri: str) -> dict[str, str]:
    """The environment the job launcher gives a trainer, with fresh output folders."""
    run_id = f"run-{uuid.uuid4().hex[:10]}"
    return {
        "CTFLOW_RUN_ID": run_id,
        "CTFLOW_PIPELINE": "digits",
        "CTFLOW_DATASET_URI": str(digits_version),
        "CTFLOW_HYPERPARAMETERS": "{}",
        "CTFLOW_TRIGGER_EVENT_ID": f"evt-{run_id}",
        "CTFLOW_GIT_SHA": "0123abc",
        "CTFLOW_IMAGE_DIGEST": "sha256:" + "d" * 64,
        "CTFLOW_JOB_ID": f"job-{run_id}",
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "AIP_MODEL_DIR": str(tmp_path / "model"),
        "AIP_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }
