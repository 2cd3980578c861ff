"""completion-handler: real trainer processes, real MLflow on SQLite, real torch, both ledgers.

Two models are trained once per session by the trainer entrypoint (`python -m
ctflow_trainer`): the digits spec's default hyperparameters ("good") and 1 epoch at
lr 1e-6 ("poor"). Each test gets its own copy of that MLflow store in its home, the
pinned holdout in its bucket, and a ledger run in `training` with the trained run's id;
then the trainer's own report (completion.json) is delivered to the service.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ctflow import states
from ctflow.codec import decode_request
from ctflow.events import TRAINING_COMPLETED, run_event, to_http_binary
from ctflow.ledger import runs
from ctflow.ledger.tables import DeadLetter, OutboxMessage, Run
from ctflow.pipelines import PipelineCatalog
from ctflow.sample_data import publish_digits_holdout
from ctflow.settings import REPO_ROOT, Settings
from tests.integration.conftest import client_for
from tests.support import serving

STRUCTURED = {"content-type": "application/cloudevents+json"}
LINEAGE_TAGS = {
    "run_id",
    "pipeline",
    "hyperparameters",
    "dataset_version",
    "dataset_generation",
    "manifest_sha256",
    "dataset_uri",
    "trigger_event_id",
    "git_sha",
    "image_digest",
    "job_id",
    "mlflow_run_id",
    "evaluation_run_id",
    "holdout_sha256",
}


@dataclass(frozen=True)
class Trained:
    mlflow_db: Path
    dataset: dict[str, Any]  # the dataset ref a ledger run records
    hyperparameters: dict[str, dict[str, Any]]
    reports: dict[str, bytes]  # completion.json of each job: the structured CloudEvent the trainer wrote

    def data(self, name: str) -> dict[str, Any]:
        return json.loads(self.reports[name])["data"]


@pytest.fixture(scope="session", name="trained")
def trained_models(tmp_path_factory: pytest.TempPathFactory, digits_folder: Path) -> Trained:
    """Both models; the recovery tests import this fixture too, and the training still happens once."""
    return _train_once(tmp_path_factory.getbasetemp() / "completion-handler-models", digits_folder)


@functools.cache
def _train_once(home: Path, digits_folder: Path) -> Trained:
    """Two trainer processes side by side, into one MLflow store."""
    from ctflow.registry.mlflow_registry import MlflowModelRegistry

    home.mkdir()
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    MlflowModelRegistry(
        Settings(home=home, mlflow_tracking_uri=tracking), artifact_root=home / "mlartifacts"
    ).ensure_experiment("digits")  # as `ctflow up`
    defaults = PipelineCatalog(REPO_ROOT / "deploy" / "pipelines").get("digits").hyperparameters.defaults
    hyperparameters = {"good": dict(defaults), "poor": {**defaults, "epochs": 1, "lr": 1e-6}}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CTFLOW_", "MLFLOW_", "AIP_"))}
    jobs = {}
    for name, values in hyperparameters.items():
        env = {
            **base,
            "CTFLOW_RUN_ID": f"digits-{name}",
            "CTFLOW_PIPELINE": "digits",
            "CTFLOW_DATASET_URI": str(digits_folder),
            "CTFLOW_HYPERPARAMETERS": json.dumps(values),
            "CTFLOW_TRIGGER_EVENT_ID": f"evt-{name}",
            "CTFLOW_GIT_SHA": "0123abc",
            "CTFLOW_IMAGE_DIGEST": "sha256:" + "d" * 64,
            "CTFLOW_JOB_ID": f"local/digits-{name}/1",
            "CTFLOW_TORCH_THREADS": "1",
            "MLFLOW_TRACKING_URI": tracking,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "AIP_MODEL_DIR": str(home / name / "model"),
            "AIP_CHECKPOINT_DIR": str(home / name / "checkpoints"),
        }
        jobs[name] = subprocess.Popen(
            [sys.executable, "-m", "ctflow_trainer"],
            env=env,
            cwd=home,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    for name, job in jobs.items():
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, f"trainer {name} failed: {err.decode()[-3000:]}"
    marker = (digits_folder / "_MANIFEST.json").read_bytes()
    dataset = {
        "version": "v1",
        "uri": str(digits_folder),
        "manifest_uri": str(digits_folder / "_MANIFEST.json"),
        "manifest_sha256": hashlib.sha256(marker).hexdigest(),
        "generation": "1764000000000000",
        "bucket": "local-bucket",
        "total_bytes": 1,
        "files": json.loads(marker)["files"],
    }
    reports = {name: (home / name / "model" / "completion.json").read_bytes() for name in jobs}
    return Trained(home / "mlflow.db", dataset, hyperparameters, reports)


@pytest.fixture(name="prepared")
def prepared_deps(deps, trained):  # type: ignore[no-untyped-def]
    """This test's MLflow store (a copy of the trained one) and the pinned holdout in its bucket."""
    deps.settings.home.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(trained.mlflow_db) as source, sqlite3.connect(deps.settings.home / "mlflow.db") as copy:
        source.backup(copy)
    publish_digits_holdout(deps.pipelines.get("digits"), deps.blobs)
    return deps


@pytest.fixture
def handler(prepared) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    from completion_handler import app as module

    with client_for(module, prepared) as client:
        yield client


def start_training(deps, trained: Trained, name: str) -> str:  # type: ignore[no-untyped-def]
    """A ledger run in `training`, as the job-launcher leaves it, for the job trained as `name`."""
    data = trained.data(name)
    with deps.ledger.transaction() as tx:
        runs.create(
            tx,
            run_id=data["run_id"],
            pipeline="digits",
            service="dataset-listener",
            trigger={"kind": "dataset", "event_id": f"evt-{name}", "source": "//test"},
            hyperparameters=trained.hyperparameters[name],
            dataset_version="v1",
            dataset=trained.dataset,
        )
        run = runs.get(tx, data["run_id"])
        runs.transition(tx, run, states.TRAINING, "job-launcher")
        run.job = {"job_id": data["job_id"], "backend": "local"}
    return data["run_id"]


def run_of(deps, run_id: str) -> Run:  # type: ignore[no-untyped-def]
    with deps.ledger.transaction() as tx:
        return runs.get(tx, run_id)


def outbox(deps, event_type: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    with deps.ledger.transaction() as tx:
        rows = tx.scalars(select(OutboxMessage).where(OutboxMessage.event_type == event_type)).all()
        return [json.loads(row.data) for row in rows]


def mlflow(deps):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(deps.settings.tracking_uri, registry_uri=deps.settings.tracking_uri)


def versions(deps) -> list[Any]:  # type: ignore[no-untyped-def]
    return mlflow(deps).search_model_versions("name = 'digits'")


def evaluation_runs(deps) -> list[Any]:  # type: ignore[no-untyped-def]
    client = mlflow(deps)
    experiment = client.get_experiment_by_name("digits-evaluations")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_good_model_without_champion_is_registered_with_lineage(prepared, handler, trained):
    """First model of the pipeline: evaluated on the pinned holdout, registered once with every lineage tag,
    alias challenger, an evaluation run with both confusion matrix and holdout hash, model.registered queued."""
    deps, data = prepared, trained.data("good")
    run_id = start_training(deps, trained, "good")
    answer = handler.post("/", content=trained.reports["good"], headers=STRUCTURED).json()
    assert answer["status"] == "processed" and answer["run_ids"] == [run_id]

    run = run_of(deps, run_id)
    assert (run.state, run.model_version, run.mlflow_run_id) == ("registered", "1", data["mlflow_run_id"])
    assert run.metrics == data["metrics"]  # what training reported
    holdout = deps.blobs.read_bytes("holdout/digits/v1/holdout.npz", max_bytes=10**7)
    evaluation = run.evaluation
    assert evaluation["holdout"] == {
        "uri": "holdout/digits/v1/holdout.npz",
        "samples": 359,
        "sha256": hashlib.sha256(holdout).hexdigest(),
    }
    assert evaluation["challenger"]["accuracy"] >= 0.95  # the spec's default hyperparameters
    assert 0 < evaluation["challenger"]["cpu_p95_ms"] < 50
    assert evaluation["challenger"]["model_size_bytes"] == data["metrics"]["model_size_bytes"]
    assert evaluation["champion"] is None and evaluation["gate"] == {"passed": True, "reasons": []}

    [version] = versions(deps)
    tags = version.tags
    assert {k.removeprefix("ctflow.") for k in tags} >= LINEAGE_TAGS
    assert (tags["ctflow.run_id"], tags["ctflow.mlflow_run_id"], tags["ctflow.job_id"]) == (
        run_id,
        data["mlflow_run_id"],
        "local/digits-good/1",
    )
    assert json.loads(tags["ctflow.hyperparameters"]) == trained.hyperparameters["good"]
    assert (tags["ctflow.dataset_version"], tags["ctflow.dataset_generation"], tags["ctflow.manifest_sha256"]) == (
        "v1",
        trained.dataset["generation"],
        trained.dataset["manifest_sha256"],
    )
    assert (tags["ctflow.trigger_event_id"], tags["ctflow.git_sha"], tags["ctflow.image_digest"]) == (
        "evt-good",
        "0123abc",
        "sha256:" + "d" * 64,
    )
    assert tags["ctflow.holdout_sha256"] == evaluation["holdout"]["sha256"]
    assert tags["ctflow.evaluation_run_id"] == evaluation["evaluation_run_id"]
    assert version.source == tags["ctflow.model_files_uri"] and version.source.endswith("/artifacts/model")
    assert str(mlflow(deps).get_model_version_by_alias("digits", "challenger").version) == "1"

    [evaluated] = evaluation_runs(deps)
    assert evaluated.info.run_id == evaluation["evaluation_run_id"] and evaluated.info.status == "FINISHED"
    assert evaluated.info.artifact_uri.startswith(deps.settings.home.as_uri())  # embedded: artifacts in <home>
    assert evaluated.data.tags["ctflow.holdout_sha256"] == evaluation["holdout"]["sha256"]
    assert evaluated.data.tags["ctflow.challenger_mlflow_run_id"] == data["mlflow_run_id"]
    assert (evaluated.data.tags["ctflow.champion_version"], evaluated.data.tags["ctflow.run_id"]) == ("none", run_id)
    assert evaluated.data.metrics["challenger.accuracy"] == evaluation["challenger"]["accuracy"]
    matrix = mlflow(deps).download_artifacts(evaluated.info.run_id, "confusion_matrix.json", str(deps.settings.home))
    challenger_matrix = json.loads(Path(matrix).read_text())["challenger"]
    assert sum(map(sum, challenger_matrix)) == 359 and len(challenger_matrix) == 10
    assert sum(challenger_matrix[i][i] for i in range(10)) / 359 == pytest.approx(evaluation["challenger"]["accuracy"])

    [registered] = outbox(deps, "ctflow.model.registered.v1")
    assert (registered["model_name"], registered["model_version"], registered["champion_version"]) == (
        "digits",
        "1",
        None,
    )
    assert registered["metrics"]["accuracy"] == evaluation["challenger"]["accuracy"]


def test_poor_model_against_champion_is_rejected_with_reasons(prepared, handler, trained):
    """With version 1 as champion, 1 epoch at lr 1e-6 is rejected: the reasons name accuracy, its value and the
    champion's; no version is created and no alias moves."""
    deps = prepared
    start_training(deps, trained, "good")
    assert handler.post("/", content=trained.reports["good"], headers=STRUCTURED).json()["status"] == "processed"
    deps.registry.set_alias("digits", "champion", "1")
    champion_accuracy = run_of(deps, "digits-good").evaluation["challenger"]["accuracy"]

    run_id = start_training(deps, trained, "poor")
    assert handler.post("/", content=trained.reports["poor"], headers=STRUCTURED).json()["status"] == "processed"
    run = run_of(deps, run_id)
    accuracy = run.evaluation["challenger"]["accuracy"]
    assert run.state == "rejected" and run.model_version is None and accuracy < 0.5
    assert run.evaluation["champion"]["version"] == "1"
    assert run.evaluation["champion"]["accuracy"] == pytest.approx(champion_accuracy)  # same holdout, same model
    reasons = [
        f"accuracy {accuracy:.4f} is below the minimum 0.9000",
        f"accuracy {accuracy:.4f} does not improve on champion version 1 ({champion_accuracy:.4f}) by at least 0.0000",
    ]
    assert run.evaluation["gate"] == {"passed": False, "reasons": reasons}
    assert run.reason == "; ".join(reasons)

    assert [str(v.version) for v in versions(deps)] == ["1"]
    client = mlflow(deps)
    assert str(client.get_model_version_by_alias("digits", "challenger").version) == "1"
    assert str(client.get_model_version_by_alias("digits", "champion").version) == "1"
    [rejected] = outbox(deps, "ctflow.model.rejected.v1")
    assert (rejected["run_id"], rejected["reasons"], rejected["champion_version"]) == (run_id, reasons, "1")
    poor_evaluation = next(r for r in evaluation_runs(deps) if r.data.tags["ctflow.run_id"] == run_id)
    assert poor_evaluation.data.tags["ctflow.gate"] == "rejected"
    assert poor_evaluation.data.metrics["champion.accuracy"] == pytest.approx(champion_accuracy)


def test_three_concurrent_deliveries_while_reconcile_ticks_evaluate_once(prepared, trained):
    """The same report three times at once, with reconcile ticking throughout: one evaluation, one version."""
    from completion_handler import app as module
    from completion_handler.finishing import finish_stuck

    deps = prepared
    run_id = start_training(deps, trained, "good")
    binary = to_http_binary(decode_request(STRUCTURED, trained.reports["good"]))  # how the trainer POSTs it
    deliveries = [(STRUCTURED, trained.reports["good"])] * 2 + [binary]
    app = module.create_app()
    app.state.deps = deps
    stop = threading.Event()

    def reconcile_until_stopped() -> None:
        while not stop.is_set():
            finish_stuck(deps)

    with serving(app) as url, ThreadPoolExecutor(4) as pool:
        ticking = pool.submit(reconcile_until_stopped)
        answers = list(pool.map(lambda d: httpx.post(url, headers=d[0], content=d[1], timeout=120), deliveries))
        stop.set()
        ticking.result()
    assert sorted(a.json()["status"] for a in answers) == ["duplicate", "duplicate", "processed"]
    assert run_of(deps, run_id).state == "registered"
    assert len(versions(deps)) == 1 and len(evaluation_runs(deps)) == 1
    assert len(outbox(deps, "ctflow.model.registered.v1")) == 1


def test_failed_completion_fails_the_run_and_a_late_success_changes_nothing(prepared, handler, trained):
    """The job-launcher's report of a killed trainer fails the run with that reason; the trainer's own report
    arriving later is a duplicate: no evaluation, no version."""
    deps = prepared
    run_id = start_training(deps, trained, "good")
    died = run_event(
        TRAINING_COMPLETED,
        "job-launcher",
        run_id,
        {
            "run_id": run_id,
            "pipeline": "digits",
            "status": "failed",
            "metrics": {},
            "error": "trainer process was killed by SIGKILL",
            "job_id": "local/digits-good/1",
        },
        event_id=f"training-completed-{run_id}",
    )
    headers, body = to_http_binary(died)
    assert handler.post("/", content=body, headers=headers).json()["status"] == "processed"
    run = run_of(deps, run_id)
    assert (run.state, run.reason) == ("failed", "training failed: trainer process was killed by SIGKILL")

    late = handler.post("/", content=trained.reports["good"], headers=STRUCTURED).json()
    assert late["status"] == "duplicate" and late["detail"].startswith(f"run {run_id} is failed, not training;")
    assert run_of(deps, run_id).state == "failed"
    assert versions(deps) == [] and evaluation_runs(deps) == []
    assert handler.post("/", content=body, headers=headers).json()["status"] == "duplicate"  # inbox dedup


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("unknown-run", "training.completed for run 'digits-ghost', which the ledger does not know"),
        ("wrong-pipeline", "belongs to pipeline 'digits-wide'; the ledger says 'digits'"),
        ("subject-mismatch", "event subject 'digits-other' and data.run_id 'digits-good' name different runs"),
        ("bad-status", "data does not match its schema: status: Input should be 'succeeded' or 'failed'"),
    ],
)
def test_bad_completions_become_dead_letters(prepared, handler, trained, change, expected):
    """Reports that cannot belong to a run in the ledger are dead letters with a reason, never a 5xx or a retry."""
    deps = prepared
    start_training(deps, trained, "good")
    event = json.loads(trained.reports["good"])
    if change == "unknown-run":
        event["subject"] = event["data"]["run_id"] = "digits-ghost"
    elif change == "wrong-pipeline":
        event["data"]["pipeline"] = "digits-wide"
    elif change == "subject-mismatch":
        event["subject"] = "digits-other"
    else:
        event["data"]["status"] = "done"
    response = handler.post("/", content=json.dumps(event).encode(), headers=STRUCTURED)
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    assert expected in response.json()["detail"]
    with deps.ledger.transaction() as tx:
        assert tx.get(DeadLetter, response.json()["dead_letter_id"]).consumer == "completion-handler"
    assert run_of(deps, "digits-good").state == "training" and versions(deps) == []


def test_holdout_that_does_not_match_its_pin_fails_the_run(prepared, handler, trained, pipelines_dir):
    """A holdout whose sha256 differs from the spec's pin is never evaluated against: the run fails, saying so."""
    deps = prepared
    spec = (pipelines_dir / "digits.yaml").read_text()
    pin = "0" * 64
    pinned = re.search(r'^  sha256: "([0-9a-f]{64})"$', spec, re.M)
    assert pinned, "the bundled digits pipeline pins its holdout"
    (pipelines_dir / "digits.yaml").write_text(spec.replace(pinned.group(1), pin))
    run_id = start_training(deps, trained, "good")
    assert handler.post("/", content=trained.reports["good"], headers=STRUCTURED).json()["status"] == "processed"
    run = run_of(deps, run_id)
    assert run.state == "failed"
    assert run.reason.startswith("evaluation failed: holdout holdout/digits/v1/holdout.npz has sha256 ")
    assert run.reason.endswith(f"the pipeline pins {pin} (the file changed since it was pinned)")
    assert versions(deps) == [] and outbox(deps, "ctflow.model.registered.v1") == []
