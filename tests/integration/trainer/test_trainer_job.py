"""Whole training jobs in-process against real MLflow on SQLite: outputs, tracking, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from mlflow import MlflowClient

from ctflow_trainer.job import run_job
from tests.integration.trainer.jobs import completion, curve, mlflow_runs
from tests.support import recording_server

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _holdout_accuracy(model_file: Path, holdout: Path) -> float:
    model = torch.jit.load(str(model_file))
    with np.load(holdout) as data, torch.no_grad():
        predictions = model(torch.from_numpy(data["X"])).argmax(1).numpy()
        return float((predictions == data["y"]).mean())


def test_default_hyperparameters_train_a_servable_model_with_full_tracking(
    job_env: dict[str, str], holdout_file: Path
) -> None:
    """Defaults reach >= 0.95 on the pinned holdout; MLflow has params, curves, dataset and tags."""
    assert run_job(job_env) == 0

    model_dir = Path(job_env["AIP_MODEL_DIR"])
    assert {"model.pt", "state_dict.pt", "model_config.json", "completion.json"} <= {
        p.name for p in model_dir.iterdir()
    }
    assert _holdout_accuracy(model_dir / "model.pt", holdout_file) >= 0.95
    config = json.loads((model_dir / "model_config.json").read_text())
    assert (config["architecture"], config["input_shape"], config["class_labels"][9]) == (
        "mlp",
        [1, 8, 8],
        "9",
    )

    event = completion(job_env)
    data = event["data"]
    assert (event["type"], event["id"], event["subject"]) == (
        "ctflow.training.completed.v1",
        f"training-completed-{job_env['CTFLOW_RUN_ID']}",
        job_env["CTFLOW_RUN_ID"],
    )
    assert (data["status"], data["error"], data["resumed_from_epoch"]) == ("succeeded", None, None)
    assert set(data["metrics"]) == {
        "val_accuracy",
        "val_loss",
        "epochs_completed",
        "best_epoch",
        "train_seconds",
        "model_size_bytes",
    }
    assert data["metrics"]["model_size_bytes"] == (model_dir / "model.pt").stat().st_size
    assert data["epochs_completed"] == data["metrics"]["epochs_completed"] >= data["metrics"]["best_epoch"]

    [run] = mlflow_runs(job_env)
    assert run.info.run_id == data["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.params == {
        "model": "mlp",
        "lr": "0.003",
        "epochs": "30",
        "batch_size": "64",
        "hidden_units": "128",
        "dropout": "0.1",
        "weight_decay": "0.0001",
        "patience": "5",
        "seed": "42",
    }
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        steps = [step for step, _ in curve(job_env, run.info.run_id, key)]
        assert steps == list(range(1, data["epochs_completed"] + 1)), key
    assert run.data.metrics["best_val_accuracy"] == data["metrics"]["val_accuracy"]
    manifest_sha = run.data.tags["ctflow.manifest_sha256"]
    assert {
        k: run.data.tags[k]
        for k in (
            "ctflow.run_id",
            "ctflow.pipeline",
            "ctflow.trigger_event_id",
            "ctflow.git_sha",
            "ctflow.image_digest",
            "ctflow.job_id",
            "ctflow.dataset_uri",
        )
    } == {
        "ctflow.run_id": job_env["CTFLOW_RUN_ID"],
        "ctflow.pipeline": "digits",
        "ctflow.trigger_event_id": job_env["CTFLOW_TRIGGER_EVENT_ID"],
        "ctflow.git_sha": "0123abc",
        "ctflow.image_digest": job_env["CTFLOW_IMAGE_DIGEST"],
        "ctflow.job_id": job_env["CTFLOW_JOB_ID"],
        "ctflow.dataset_uri": job_env["CTFLOW_DATASET_URI"],
    }
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == manifest_sha[:36]
    assert job_env["CTFLOW_DATASET_URI"] in dataset_input.dataset.source
    client = MlflowClient(job_env["MLFLOW_TRACKING_URI"])
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} == {
        "model/model.pt",
        "model/state_dict.pt",
        "model/model_config.json",
    }
    assert data["artifact_uri"] == f"{run.info.artifact_uri}/model"
    assert data["mlflow_model_uri"].startswith("models:/")


def test_same_seed_data_and_hyperparameters_give_identical_metrics(job_env: dict[str, str], tmp_path: Path) -> None:
    """Two runs of the same job on CPU log bit-identical curves and final metrics."""
    job_env["CTFLOW_HYPERPARAMETERS"] = json.dumps({"epochs": 3, "seed": 3})
    second = {
        **job_env,
        "CTFLOW_RUN_ID": job_env["CTFLOW_RUN_ID"] + "-again",
        "AIP_MODEL_DIR": str(tmp_path / "model-2"),
        "AIP_CHECKPOINT_DIR": str(tmp_path / "ckpt-2"),
    }
    assert run_job(job_env) == 0 and run_job(second) == 0
    first_data, second_data = completion(job_env)["data"], completion(second)["data"]
    for data in (first_data, second_data):
        data["metrics"].pop("train_seconds")
        # TorchScript mangles class names on a second trace in one process, so the file
        # size differs by a few bytes here (not across processes); the weights are compared below.
        data["metrics"].pop("model_size_bytes")
    assert first_data["metrics"] == second_data["metrics"]
    weights = [torch.load(Path(env["AIP_MODEL_DIR"]) / "state_dict.pt", weights_only=True) for env in (job_env, second)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert curve(job_env, first_data["mlflow_run_id"], key) == curve(second, second_data["mlflow_run_id"], key)


def test_the_cnn_trains_too(job_env: dict[str, str]) -> None:
    """model=cnn builds the convolutional network and learns something in two epochs."""
    job_env["CTFLOW_HYPERPARAMETERS"] = json.dumps({"model": "cnn", "epochs": 2})
    assert run_job(job_env) == 0
    data = completion(job_env)["data"]
    assert data["epochs_completed"] == 2 and data["metrics"]["val_accuracy"] > 0.5
    config = json.loads((Path(job_env["AIP_MODEL_DIR"]) / "model_config.json").read_text())
    assert config["architecture"] == "cnn"


def test_a_checksum_mismatch_fails_the_run_before_training(
    job_env: dict[str, str], digits_version: Path, tmp_path: Path
) -> None:
    """A changed train.npz: exit 1, a failed report naming the file, and no MLflow run at all."""
    import shutil

    tampered = Path(shutil.copytree(digits_version, tmp_path / "tampered"))
    data = bytearray((tampered / "train.npz").read_bytes())
    data[-100] ^= 0x01
    (tampered / "train.npz").write_bytes(bytes(data))
    job_env["CTFLOW_DATASET_URI"] = str(tampered)

    assert run_job(job_env) == 1
    report = completion(job_env)["data"]
    assert report["status"] == "failed" and "train.npz" in report["error"] and "sha256" in report["error"]
    assert (report["mlflow_run_id"], report["epochs_completed"], report["metrics"]) == (None, 0, {})
    assert mlflow_runs(job_env) == []


def test_bad_hyperparameters_are_reported_as_a_failed_run(job_env: dict[str, str]) -> None:
    """Failures while reading the job (here an unknown key) still produce the completion event."""
    job_env["CTFLOW_HYPERPARAMETERS"] = json.dumps({"learning_rate": 0.1})
    assert run_job(job_env) == 1
    assert "learning_rate" in completion(job_env)["data"]["error"]


def test_the_report_is_posted_as_a_binary_mode_cloudevent(job_env: dict[str, str]) -> None:
    """The receiver gets ce-* headers and JSON data (after one 503); ctflow's codec reads it."""
    from ctflow.codec import decode_request
    from ctflow.contracts import TrainingCompleted

    job_env.update(CTFLOW_HYPERPARAMETERS=json.dumps({"epochs": 1}), CTFLOW_TRACEPARENT=TRACEPARENT)
    with recording_server([503]) as (url, receiver):
        job_env["CTFLOW_REPORT_URI"] = url
        assert run_job(job_env) == 0
    assert len(receiver.requests) == 2  # the 503, then the accepted retry
    headers, body = receiver.requests[-1]
    run_id = job_env["CTFLOW_RUN_ID"]
    assert {
        k: headers[k]
        for k in (
            "ce-specversion",
            "ce-type",
            "ce-source",
            "ce-id",
            "ce-subject",
            "ce-traceparent",
            "content-type",
        )
    } == {
        "ce-specversion": "1.0",
        "ce-type": "ctflow.training.completed.v1",
        "ce-source": "//ctflow/trainer",
        "ce-id": f"training-completed-{run_id}",
        "ce-subject": run_id,
        "ce-traceparent": TRACEPARENT,
        "content-type": "application/json",
    }
    assert headers["ce-time"].endswith("Z")
    assert json.loads(body) == completion(job_env)["data"]
    event = decode_request(headers, body)
    assert (event.id, event.traceparent, event.data["status"]) == (
        f"training-completed-{run_id}",
        TRACEPARENT,
        "succeeded",
    )
    TrainingCompleted.model_validate(event.data)


def test_without_a_run_id_the_job_exits_1_and_writes_nothing(job_env: dict[str, str]) -> None:
    """No run id, nothing to report on: exit 1 without a completion file."""
    del job_env["CTFLOW_RUN_ID"]
    assert run_job(job_env) == 1
    assert not Path(job_env["AIP_MODEL_DIR"]).exists()
