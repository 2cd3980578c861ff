"""Issue 3 end to end, embedded: a dropped dataset is trained, evaluated and registered; poor
hyperparameters are rejected against the champion; a killed trainer fails its run within one
reconcile interval and the next request still trains."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from ctflow.settings import REPO_ROOT
from tests.e2e.conftest import RECONCILE_INTERVAL_SECONDS, ctflow
from tests.support import trainer_pids, wait_for

pytestmark = pytest.mark.e2e


def run_of(api: str, run_id: str) -> dict:
    return httpx.get(f"{api}/runs/{run_id}", timeout=10).json()


def the_run(api: str, predicate) -> dict | None:  # type: ignore[no-untyped-def]
    return next((r for r in httpx.get(f"{api}/runs", timeout=10).json() if predicate(r)), None)


def ended_in(api: str, run_id: str, wanted: tuple[str, ...], timeout: float) -> dict:
    terminal = ("promoted", "rolled_back", "rejected", "failed", "superseded")
    run = wait_for(lambda: (r := run_of(api, run_id))["state"] in terminal and r, timeout=timeout, interval=0.2)
    assert run["state"] in wanted, (run["state"], run["reason"])
    return run


def test_drop_is_served_within_90s_and_poor_hyperparameters_are_rejected(stack, digits_folder):
    home, api, _ = stack
    from mlflow import MlflowClient

    endpoints = json.loads((home / "endpoints.json").read_text())
    dropped = json.loads(ctflow(home, "drop", str(digits_folder), "--pipeline", "digits", "--version", "t1").stdout)
    started = time.monotonic()
    run_id = wait_for(lambda: the_run(api, lambda r: r["dataset_version"] == "t1"), timeout=5)["run_id"]
    run = ended_in(api, run_id, ("promoted",), timeout=90)
    assert time.monotonic() - started < 90

    states = [t["name"] for t in run["timeline"] if t["kind"] == "state"]
    assert states == ["requested", "training", "evaluating", "registered", "rolling_out", "promoted"]
    # The first deployment of the pipeline serves at once, and answers at the stable URL.
    served = httpx.post(
        f"{endpoints['serving']['digits'].rstrip('/')}/v1/models/digits:predict",
        json={"instances": [[[[0.0] * 8] * 8]]},
        timeout=10,
    )
    assert served.status_code == 200 and served.json()["model_version"] == "1"
    # The trainer's report reaches the job-launcher too, through the stack's bus, as through Pub/Sub.
    job = wait_for(lambda: (j := run_of(api, run_id)["job"]).get("completion") and j, timeout=10)
    assert job["state"] == "succeeded" and job["completion"]["source"] == "//ctflow/trainer"
    assert job["backend"] == "local" and job["job_id"] == f"local/{run_id}/1"
    assert run["model_version"] == "1" and run["mlflow_run_id"]
    evaluation = run["evaluation"]
    assert evaluation["challenger"]["accuracy"] >= 0.95 and evaluation["gate"]["passed"]
    assert evaluation["holdout"]["sha256"] and evaluation["champion"] is None

    client = MlflowClient(endpoints["mlflow"])
    training = client.get_run(run["mlflow_run_id"])
    assert len(client.get_metric_history(training.info.run_id, "val_loss")) >= 2  # per-epoch curves
    assert training.data.params["lr"] == "0.003"  # the spec's defaults: no champion yet
    assert [d.dataset.digest for d in training.inputs.dataset_inputs] == [dropped["manifest_sha256"][:36]]
    version = client.get_model_version_by_alias("digits", "challenger")
    assert str(version.version) == "1"
    assert version.tags["ctflow.run_id"] == run_id
    assert version.tags["ctflow.manifest_sha256"] == dropped["manifest_sha256"]
    assert version.tags["ctflow.dataset_generation"] == run["dataset"]["generation"]
    assert version.tags["ctflow.job_id"] == job["job_id"]
    # Lineage of an embedded run: this checkout's commit and the package's version, on the run and the version.
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert job["lineage"]["git_sha"] == head.stdout.strip() == version.tags["ctflow.git_sha"]
    assert job["lineage"]["code_version"] == importlib.metadata.version("ctflow") == version.tags["ctflow.code_version"]
    assert json.loads(version.tags["ctflow.hyperparameters"])["lr"] == 0.003

    # The deployer moved the champion when it promoted; a poor model must not beat it.
    assert str(client.get_model_version_by_alias("digits", "champion").version) == "1"
    champion_accuracy = evaluation["challenger"]["accuracy"]
    ctflow(home, "publish", "--pipeline", "digits", "--hparams", '{"epochs": 1, "lr": 1e-6}', "--reason", "poor")
    poor_id = wait_for(lambda: the_run(api, lambda r: r["trigger"].get("reason") == "poor"), timeout=5)["run_id"]
    poor = ended_in(api, poor_id, ("rejected",), timeout=60)
    reasons = " ".join(poor["evaluation"]["gate"]["reasons"])
    value = poor["evaluation"]["challenger"]["accuracy"]
    assert poor["reason"] and "accuracy" in poor["reason"]
    assert f"accuracy {value:.4f}" in reasons and f"champion version 1 ({champion_accuracy:.4f})" in reasons
    assert poor["model_version"] is None
    assert [str(v.version) for v in client.search_model_versions("name='digits'")] == ["1"]


def test_killed_trainer_fails_its_run_within_one_reconcile_interval_then_a_new_request_trains(stack, digits_folder):
    home, api, _ = stack
    ctflow(home, "drop", str(digits_folder), "--pipeline", "digits", "--version", "k1")
    run_id = wait_for(lambda: the_run(api, lambda r: r["dataset_version"] == "k1"), timeout=5)["run_id"]

    def training_with_a_checkpoint() -> tuple[Path, int] | None:
        found = [(Path(folder), pid) for folder, pid in trainer_pids(home).items() if f"/{run_id}/" in folder + "/"]
        if found and any((found[0][0] / "checkpoints").glob("*")):
            return found[0]
        return None

    folder, pid = wait_for(training_with_a_checkpoint, timeout=30, interval=0.05)
    os.killpg(pid, signal.SIGKILL)
    killed = time.monotonic()
    failed = ended_in(api, run_id, ("failed",), timeout=30)
    assert time.monotonic() - killed < RECONCILE_INTERVAL_SECONDS + 1.5
    assert "SIGKILL" in failed["reason"] and failed["job"]["state"] == "failed"
    assert not (folder / "model" / "completion.json").exists()

    ctflow(home, "publish", "--pipeline", "digits", "--hparams", "{}", "--reason", "after the crash")
    retry_id = wait_for(lambda: the_run(api, lambda r: r["trigger"].get("reason") == "after the crash"), timeout=5)
    assert ended_in(api, retry_id["run_id"], ("promoted",), timeout=90)["model_version"] == "1"
