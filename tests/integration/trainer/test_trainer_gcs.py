"""A job whose dataset, model folder and checkpoints are gs:// URIs, against the GCS emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctflow.blobstore.gcs import shared_client
from ctflow.manifest import MARKER_NAME
from ctflow.sample_data import write_digits_dataset
from ctflow_trainer import uris
from ctflow_trainer.job import run_job
from tests.integration.emulators import gcs_emulator

BUCKET = "ctflow-test"


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with gcs_emulator(BUCKET) as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
        shared_client.cache_clear()  # the client reads the emulator address when built
        yield f"gs://{BUCKET}"
    shared_client.cache_clear()


def test_a_job_reads_and_writes_gcs(bucket: str, job_env: dict[str, str], tmp_path: Path) -> None:
    """Dataset verified from the bucket; model, completion report and checkpoints land in it."""
    # A version of its own: MLflow knows a dataset by its digest and keeps the first source logged.
    local = write_digits_dataset(tmp_path / "gcs-v1", version="gcs-v1")
    version = f"{bucket}/datasets/digits/gcs-v1"
    for name in ("train.npz", MARKER_NAME):  # the marker last, as `ctflow drop` does
        uris.write_bytes(f"{version}/{name}", (local / name).read_bytes())
    job_env.update(
        CTFLOW_DATASET_URI=version + "/",
        AIP_MODEL_DIR=f"{bucket}/runs/r1/model/",
        AIP_CHECKPOINT_DIR=f"{bucket}/runs/r1/checkpoints/",
        CTFLOW_HYPERPARAMETERS=json.dumps({"epochs": 2}),
    )

    assert run_job(job_env) == 0

    assert uris.list_names(job_env["AIP_MODEL_DIR"]) == [
        "completion.json",
        "model.pt",
        "model_config.json",
        "state_dict.pt",
    ]
    report = json.loads(uris.read_bytes(f"{bucket}/runs/r1/model/completion.json"))
    assert report["data"]["status"] == "succeeded" and report["data"]["model_dir"] == job_env["AIP_MODEL_DIR"]
    assert uris.list_names(job_env["AIP_CHECKPOINT_DIR"]) == ["ckpt-00001.pt", "ckpt-00002.pt"]


def test_a_missing_gcs_version_fails_with_a_report_in_the_bucket(bucket: str, job_env: dict[str, str]) -> None:
    """No marker at the dataset URI: exit 1 and a failed completion.json in the model folder."""
    job_env.update(
        CTFLOW_DATASET_URI=f"{bucket}/datasets/digits/absent/",
        AIP_MODEL_DIR=f"{bucket}/runs/r2/model",
    )
    assert run_job(job_env) == 1
    report = json.loads(uris.read_bytes(f"{bucket}/runs/r2/model/completion.json"))
    assert report["data"]["status"] == "failed" and "not complete" in report["data"]["error"]
