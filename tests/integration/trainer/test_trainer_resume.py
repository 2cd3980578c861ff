"""A job killed mid-training (SIGKILL, as a preempted VM) resumes from its checkpoint when rerun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ctflow.manifest import MARKER_NAME, build_manifest
from ctflow.sample_data import npz_bytes
from ctflow_trainer.checkpoints import checkpoint_name
from ctflow_trainer.job import run_job

from tests.integration.trainer.conftest import REPO_ROOT
from tests.integration.trainer.jobs import completion, curve, mlflow_runs

HPARAMS = json.dumps({"epochs": 4, "patience": 50})


def _slow_version(source: Path, dest: Path) -> Path:
    """The digits tiled 30x (~43k rows): epochs long enough (~0.3 s) to kill one in the middle."""
    with np.load(source / "train.npz") as data:
        x, y = np.tile(data["X"], (30, 1, 1, 1)), np.tile(data["y"], 30)
    dest.mkdir(parents=True)
    (dest / "train.npz").write_bytes(npz_bytes(X=x, y=y))
    (dest / MARKER_NAME).write_bytes(build_manifest(dest))
    return dest


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    path = os.pathsep.join([str(REPO_ROOT / "trainer_image"), str(REPO_ROOT / "services")])
    return subprocess.Popen([sys.executable, "-m", "ctflow_trainer"], env={**os.environ, **env, "PYTHONPATH": path},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_a_killed_job_resumes_into_the_same_mlflow_run_and_matches_an_uninterrupted_one(
        job_env: dict[str, str], digits_version: Path, tmp_path: Path) -> None:
    """Kill after epoch 2's checkpoint; the rerun resumes there, logs each epoch once, same result."""
    job_env.update(CTFLOW_DATASET_URI=str(_slow_version(digits_version, tmp_path / "slow")),
                   CTFLOW_HYPERPARAMETERS=HPARAMS)
    checkpoints = Path(job_env["AIP_CHECKPOINT_DIR"])
    doomed = _start(job_env)
    deadline = time.monotonic() + 60
    while not (checkpoints / checkpoint_name(2)).exists():
        assert doomed.poll() is None, doomed.stderr.read().decode()[-3000:] if doomed.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint for epoch 2 within 60 s"
        time.sleep(0.01)
    doomed.kill()
    doomed.wait()
    assert not (Path(job_env["AIP_MODEL_DIR"]) / "completion.json").exists()
    assert not (checkpoints / checkpoint_name(4)).exists()

    rerun = _start(job_env)
    _, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr.decode()[-3000:]
    assert all(json.loads(line)["run_id"] == job_env["CTFLOW_RUN_ID"] for line in stderr.decode().splitlines())

    data = completion(job_env)["data"]
    assert data["status"] == "succeeded" and data["epochs_completed"] == 4
    assert data["resumed_from_epoch"] in (2, 3)  # 3 if the kill landed just after epoch 3's checkpoint
    [run] = mlflow_runs(job_env)
    assert run.info.run_id == data["mlflow_run_id"] and run.info.status == "FINISHED"
    assert [step for step, _ in curve(job_env, run.info.run_id, "val_loss")] == [1, 2, 3, 4]

    straight = {**job_env, "CTFLOW_RUN_ID": job_env["CTFLOW_RUN_ID"] + "-straight",
                "AIP_MODEL_DIR": str(tmp_path / "straight"), "AIP_CHECKPOINT_DIR": str(tmp_path / "straight-ckpt")}
    assert run_job(straight) == 0
    reference = completion(straight)["data"]
    assert curve(straight, reference["mlflow_run_id"], "val_loss") == curve(job_env, run.info.run_id, "val_loss")
    assert reference["metrics"]["val_accuracy"] == data["metrics"]["val_accuracy"]
