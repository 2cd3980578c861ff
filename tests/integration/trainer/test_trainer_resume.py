"""A job killed mid-training (SIGKILL, as a preempted VM) resumes from its checkpoint when rerun.

That a resumed loop continues bit-for-bit is shown in tests/unit/trainer/test_trainer_loop.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import numpy as np

from ctflow.manifest import MARKER_NAME, build_manifest
from ctflow.sample_data import npz_bytes
from ctflow_trainer.job import run_job
from tests.integration.trainer.jobs import completion, curve, mlflow_runs

HPARAMS = json.dumps({"epochs": 5, "patience": 50})


def _slow_version(source: Path, dest: Path) -> Path:
    """The digits tiled 60x (~86k rows, ~0.7 s an epoch): long enough to kill one in the middle.

    Epochs this short are not all checkpointed (a write may cost at most 0.5% of training
    time, and the first write's one-time costs make the next interval ~1 s), so the job
    is killed after the first checkpoint of epoch 2 or later.
    """
    with np.load(source / "train.npz") as data:
        x, y = np.tile(data["X"], (60, 1, 1, 1)), np.tile(data["y"], 60)
    dest.mkdir(parents=True)
    (dest / "train.npz").write_bytes(npz_bytes(X=x, y=y))
    (dest / MARKER_NAME).write_bytes(build_manifest(dest))
    return dest


def _start(env: dict[str, str], stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # the trainer is installed with the project (pyproject packages trainer_image/)
        [sys.executable, "-m", "ctflow_trainer"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def _latest_checkpoint_epoch(folder: Path) -> int:
    return max((int(p.stem.split("-")[1]) for p in folder.glob("ckpt-*.pt")), default=0)


def test_a_killed_job_resumes_into_the_same_mlflow_run(
    job_env: dict[str, str], digits_version: Path, tmp_path: Path
) -> None:
    """Kill after a checkpoint of epoch >= 2: the rerun resumes, one MLflow run, each epoch once."""
    job_env.update(
        CTFLOW_DATASET_URI=str(_slow_version(digits_version, tmp_path / "slow")),
        CTFLOW_HYPERPARAMETERS=HPARAMS,
    )
    checkpoints = Path(job_env["AIP_CHECKPOINT_DIR"])
    first_log = tmp_path / "first.log"
    with first_log.open("wb") as sink:
        doomed = _start(job_env, sink)
        deadline = time.monotonic() + 60
        while _latest_checkpoint_epoch(checkpoints) < 2:
            assert doomed.poll() is None, first_log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint of epoch 2 or later within 60 s"
            time.sleep(0.01)
        doomed.kill()
        doomed.wait()
    assert not (Path(job_env["AIP_MODEL_DIR"]) / "completion.json").exists()
    killed_after = _latest_checkpoint_epoch(checkpoints)
    assert 2 <= killed_after < 5

    lines = [json.loads(line) for line in first_log.read_text().splitlines()]  # JSON, every line
    assert all(line["run_id"] == job_env["CTFLOW_RUN_ID"] and line["severity"] for line in lines)

    # The restarted job: in-process here (imports are warm), same environment, same code path.
    assert run_job(job_env) == 0
    data = completion(job_env)["data"]
    assert data["status"] == "succeeded" and data["epochs_completed"] == 5
    assert data["resumed_from_epoch"] == killed_after
    [run] = mlflow_runs(job_env)
    assert run.info.run_id == data["mlflow_run_id"] and run.info.status == "FINISHED"
    assert len(run.inputs.dataset_inputs) == 1
    assert [step for step, _ in curve(job_env, run.info.run_id, "val_loss")] == [1, 2, 3, 4, 5]
