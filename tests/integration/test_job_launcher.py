"""job-launcher: one job per run under concurrent deliveries, slots, coalescing, retrain hyperparameters,
jobs that end without reporting, and bad input. Real ledgers (SQLite and PostgreSQL), real MLflow
on SQLite and real trainer processes."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ctflow import bootstrap, events
from ctflow.codec import push_envelope
from ctflow.dataset_drop import drop_folder
from ctflow.events import to_pubsub
from ctflow.handling import service_work
from ctflow.ledger import runs
from ctflow.ledger.tables import DeadLetter, OutboxMessage, Run
from ctflow.topology import JOB_LAUNCHER
from ctflow.training import JobRequest
from ctflow.training.environment import trainer_environment
from job_launcher import slots
from job_launcher.launch import launch
from job_launcher.reconcile import reconcile_jobs
from tests.integration.conftest import client_for
from tests.support import gcs_event_request, push_request, recording_server, serving, wait_for

QUICK = {"epochs": 2}
LONG = {"model": "cnn", "epochs": 200, "patience": 50, "lr": 1e-5}  # trains for far longer than any test waits


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Real MLflow on SQLite for this module, its store and experiment made before any trainer opens it."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("launcher-mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("digits", artifact_location=(root / "artifacts").as_uri())
    return uri


@pytest.fixture
def settings(settings, tracking_uri):  # type: ignore[no-untyped-def]
    """Ended jobs are reported on the first reconcile tick (no grace): the tests never sleep for it."""
    return settings.model_copy(update={"mlflow_tracking_uri": tracking_uri, "job_poll_grace_seconds": 0})


@pytest.fixture
def launcher(deps) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    from job_launcher import app as module

    with client_for(module, deps) as client:
        yield client
    _stop_every_job(deps)


@pytest.fixture
def arrived(deps, listener, digits_folder) -> str:  # type: ignore[no-untyped-def]
    """Dataset version v1 of digits has arrived (its run is `requested`, not yet seen by the launcher)."""
    return _arrive(deps, listener, digits_folder, "v1")


# ---- one job per run ----------------------------------------------------------------------


def test_three_concurrent_deliveries_of_a_request_start_one_job(deps, launcher, consumer, arrived):
    """The same training.requested pushed three times at once: one claim, one process, one training.started."""
    run_id = _request(consumer, QUICK, "m-1")
    answers = _post_concurrently(deps, [_push(deps, events.TRAINING_REQUESTED, run_id)] * 3)
    assert sorted(a["status"] for a in answers) == ["duplicate", "duplicate", "processed"]
    run = _run(deps, run_id)
    assert run.state == "training" and run.job["backend"] == "local"
    assert run.job["job_id"] == f"local/{run_id}/1" and run.job["state"] in ("pending", "running", "succeeded")
    assert [p.name for p in (deps.settings.jobs_dir / run_id).iterdir()] == ["1"]
    assert Path(run.job["logs"]["stderr"]).exists() and run.job["model_dir"] == f"{run.job['output_uri']}/model"
    assert _emitted(deps, events.TRAINING_STARTED, run_id) == [f"training-started-{run_id}"]


def _on_fake_vertex(deps, fake, tmp_path):  # type: ignore[no-untyped-def]
    """`deps` launching through the real JobServiceClient against the fake JobService."""
    from ctflow.settings import Settings
    from ctflow.training.vertex import VertexBackend

    gcp = Settings(
        mode="gcp",
        home=tmp_path / "gcp",
        gcp_project="ctflow-test",
        bucket="ctflow-data",
        database_url="sqlite://",
        oidc_audience="https://job-launcher.example.run.app",
        allowed_invokers=["pusher@ctflow-test.iam.gserviceaccount.com"],
        vertex_api_endpoint=fake.endpoint,
    )
    return replace(deps, make_training=lambda _: VertexBackend(gcp))


def test_three_concurrent_deliveries_start_one_vertex_custom_job(deps, consumer, arrived, tmp_path):
    """gcp's backend behind the same handler: the real JobServiceClient against the fake JobService
    is asked for exactly one CustomJob, labelled with the run, and reconcile polls its state."""
    from tests.fakes.vertex_server import fake_vertex

    digest = "sha256:" + "ab" * 32
    deps.settings.images = {"trainer": f"us-docker.pkg.dev/ctflow-test/ctflow/trainer@{digest}"}  # skaffold's
    with fake_vertex(tmp_path / "vertex", buckets={"ctflow-data": tmp_path / "gcs"}) as fake:
        on_vertex = _on_fake_vertex(deps, fake, tmp_path)
        run_id = _request(consumer, QUICK, "m-vertex")
        answers = _post_concurrently(on_vertex, [_push(on_vertex, events.TRAINING_REQUESTED, run_id)] * 3)
        assert sorted(a["status"] for a in answers) == ["duplicate", "duplicate", "processed"]
        [created] = fake.created()
        assert created["labels"]["ctflow-run-id"] == run_id
        job = _run(deps, run_id).job
        assert job["backend"] == "vertex"
        # Lineage: the trainer image's digest, recorded on the run and given to the trainer to tag its MLflow run.
        assert job["lineage"]["image_digest"] == digest and job["lineage"]["trainer_image"].endswith(digest)
        env = {e["name"]: e["value"] for e in created["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["env"]}
        assert env["CTFLOW_IMAGE_DIGEST"] == digest and env["CTFLOW_CODE_VERSION"] == job["lineage"]["code_version"]
        assert job["job_id"].startswith("projects/ctflow-test/locations/us-central1/customJobs/")
        assert job["output_uri"].rstrip("/") == f"gs://ctflow-data/runs/{run_id}"
        assert _emitted(deps, events.TRAINING_STARTED, run_id) == [f"training-started-{run_id}"]
        wait_for(
            lambda: reconcile_jobs(on_vertex) is not None and _run(deps, run_id).job["state"] == "succeeded",
            timeout=90,
            interval=0.5,
        )
        assert len(fake.created()) == 1


def test_a_job_vertex_refuses_fails_its_run_at_once_without_retries(deps, consumer, arrived, tmp_path):
    """An accelerator Vertex does not know: one create request, no retry by reconcile, the run fails saying why."""
    from tests.fakes.vertex_server import fake_vertex

    spec_file = deps.settings.pipelines_dir / "digits.yaml"
    spec_file.write_text(spec_file.read_text().replace("NVIDIA_TESLA_T4", "NVIDIA_TESLA_Z9"))
    with fake_vertex(tmp_path / "vertex", buckets={"ctflow-data": tmp_path / "gcs"}) as fake:
        on_vertex = _on_fake_vertex(deps, fake, tmp_path)
        run_id = _request(consumer, QUICK, "m-refused")
        [answer] = _post_concurrently(on_vertex, [_push(on_vertex, events.TRAINING_REQUESTED, run_id)])
        assert answer["status"] == "processed"
        job = _run(deps, run_id).job
        assert (job["state"], job["launch_attempts"]) == ("failed", 1) and "NVIDIA_TESLA_Z9" in job["error"]
        assert reconcile_jobs(on_vertex)["completions_emitted"] == 1
        assert reconcile_jobs(on_vertex)["jobs_launched"] == 0 and fake.created() == []
    [event] = _outbox_events(deps, events.TRAINING_COMPLETED, run_id)
    assert event["data"]["status"] == "failed" and "unknown accelerator_type" in event["data"]["error"]


def test_racing_launches_of_a_claimed_run_start_one_job(deps, launcher, consumer, arrived):
    """A claim whose after-commit launch never ran: the launch and two reconcile ticks race, one job results."""
    run_id = _claim_without_launching(deps, consumer)
    with ThreadPoolExecutor(3) as pool:
        launched = list(pool.map(lambda _: launch(deps, run_id), range(3)))
    assert sorted(launched) == [False, False, True]
    assert [p.name for p in (deps.settings.jobs_dir / run_id).iterdir()] == ["1"]
    assert _emitted(deps, events.TRAINING_STARTED, run_id) == [f"training-started-{run_id}"]
    assert reconcile_jobs(deps)["jobs_launched"] == 0


def test_a_job_created_by_a_launcher_that_died_before_recording_it_is_found_not_duplicated(
    deps, launcher, consumer, arrived
):
    """Crash between create and record: reconcile finds the job by its run label and records it."""
    run_id = _claim_without_launching(deps, consumer)
    run, spec = _run(deps, run_id), deps.pipelines.get("digits")
    env = trainer_environment(
        deps.settings,
        report_uri=deps.trainer_report_uri,
        run_id=run_id,
        pipeline="digits",
        dataset_uri=run.dataset["uri"],
        hyperparameters=run.hyperparameters,
        trigger_event_id=run.trigger["event_id"],
        image=spec.training.image,
    )
    orphan = deps.training.launch(JobRequest(run_id, "digits", spec.training, env, {"ctflow-run-id": run_id}))
    assert reconcile_jobs(deps)["jobs_launched"] == 1
    assert _run(deps, run_id).job["job_id"] == orphan.job_id
    assert [p.name for p in (deps.settings.jobs_dir / run_id).iterdir()] == ["1"]
    assert _emitted(deps, events.TRAINING_STARTED, run_id) == [f"training-started-{run_id}"]


def test_a_launch_that_keeps_failing_ends_in_a_failed_completion_with_the_error(deps, launcher, consumer, arrived):
    """An interpreter that does not exist: retried by reconcile, given up after 3 attempts, reported failed."""
    deps.settings.trainer_python = str(deps.settings.home / "no-such-python")
    run_id = _request(consumer, QUICK, "m-1")
    assert _deliver(deps, launcher, events.TRAINING_REQUESTED, run_id)["status"] == "processed"
    assert _run(deps, run_id).job["launch_attempts"] == 1
    reconcile_jobs(deps)
    reconcile_jobs(deps)
    job = _run(deps, run_id).job
    assert (job["state"], job["launch_attempts"]) == ("failed", 3) and "FileNotFoundError" in job["error"]
    assert reconcile_jobs(deps)["completions_emitted"] == 1
    [event] = _outbox_events(deps, events.TRAINING_COMPLETED, run_id)
    assert event["data"]["status"] == "failed" and "could not launch the training job" in event["data"]["error"]
    assert not (deps.settings.jobs_dir / run_id).exists() or not any((deps.settings.jobs_dir / run_id).iterdir())


# ---- slots, queueing and coalescing --------------------------------------------------------


def test_concurrent_dataset_arrivals_take_one_slot_and_coalesce_into_the_newest(
    deps, launcher, listener, digits_folder
):
    """Four arrivals delivered at once with one slot: one trains, the newest of the rest waits, two are superseded."""
    run_ids = [_arrive(deps, listener, digits_folder, f"v{i}") for i in range(1, 5)]
    requests = [_push(deps, events.DATASET_ARRIVED, run_id) for run_id in run_ids]
    answers = _post_concurrently(deps, requests)
    assert [a["status"] for a in answers] == ["processed"] * 4
    states = {run_id: _run(deps, run_id).state for run_id in run_ids}
    [training] = [r for r, s in states.items() if s == "training"]
    [queued] = [r for r, s in states.items() if s == "queued"]
    assert queued == [r for r in run_ids if r != training][-1]  # the newest arrival that did not get the slot
    superseded = [_run(deps, r) for r, s in states.items() if s == "superseded"]
    assert len(superseded) == 2
    for run in superseded:  # each gave way to a later arrival (the newest waiting one when it was decided)
        newer = re.match(r"superseded by run (\S+):", run.reason).group(1)
        assert run_ids.index(newer) > run_ids.index(run.id)


def test_one_slot_queues_coalesces_and_hands_on_when_the_job_completes(
    deps, launcher, consumer, listener, digits_folder
):
    """v1 trains; v2 waits until v3 supersedes it; a hyperparameter request waits; v1's report frees v3's slot."""
    first = _arrive(deps, listener, digits_folder, "v1")
    assert _deliver(deps, launcher, events.DATASET_ARRIVED, first)["detail"] == f"run {first} is training"
    second = _arrive(deps, listener, digits_folder, "v2")
    assert _deliver(deps, launcher, events.DATASET_ARRIVED, second)["detail"] == f"run {second} is queued"
    third = _arrive(deps, listener, digits_folder, "v3")
    assert _deliver(deps, launcher, events.DATASET_ARRIVED, third)["detail"] == f"run {third} is queued"
    tuned = _request(consumer, {"lr": 0.01}, "m-tune")
    assert _deliver(deps, launcher, events.TRAINING_REQUESTED, tuned)["detail"] == f"run {tuned} is queued"
    assert _run(deps, second).state == "superseded"
    assert _run(deps, second).reason.startswith(f"superseded by run {third}: dataset version v3 arrived later")
    assert reconcile_jobs(deps)["queued_started"] == 0  # the slot is still taken

    report = _wait_for_report(deps, first)  # the real trainer runs to the end
    assert report["data"]["status"] == "succeeded"
    answer = _deliver_event(launcher, report)  # as Pub/Sub delivers the trainer's report in gcp mode
    assert answer["detail"] == f"the job of run {first} ended (succeeded); started waiting run(s) {third}"
    assert _deliver_event(launcher, report)["status"] == "duplicate"
    assert _run(deps, first).state == "training"  # the completion-handler, not the launcher, moves it on
    assert _run(deps, first).job["completion"]["event_id"] == f"training-completed-{first}"
    assert _run(deps, third).state == "training" and _run(deps, third).job["job_id"] == f"local/{third}/1"
    assert _run(deps, tuned).state == "queued"


# ---- retrain hyperparameters ---------------------------------------------------------------


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_a_dataset_arrival_without_a_champion_trains_with_the_spec_defaults(deps, launcher, arrived):
    """No champion: the spec's defaults, said on the run; the process gets the whole environment contract."""
    assert _deliver(deps, launcher, events.DATASET_ARRIVED, arrived)["status"] == "processed"
    run, spec = _run(deps, arrived), deps.pipelines.get("digits")
    assert run.hyperparameters == spec.hyperparameters.defaults
    assert run.trigger["hyperparameters_from"] == "spec defaults (no champion yet)"
    env = _process_environment(run.job)
    assert json.loads(env["CTFLOW_HYPERPARAMETERS"]) == spec.hyperparameters.defaults
    assert {
        k: env[k]
        for k in (
            "CTFLOW_RUN_ID",
            "CTFLOW_PIPELINE",
            "CTFLOW_DATASET_URI",
            "CTFLOW_TRIGGER_EVENT_ID",
            "CTFLOW_JOB_ID",
            "MLFLOW_TRACKING_URI",
            "MLFLOW_EXPERIMENT_NAME",
            "AIP_MODEL_DIR",
        )
    } == {
        "CTFLOW_RUN_ID": arrived,
        "CTFLOW_PIPELINE": "digits",
        "CTFLOW_DATASET_URI": run.dataset["uri"],
        "CTFLOW_TRIGGER_EVENT_ID": run.trigger["event_id"],
        "CTFLOW_JOB_ID": run.job["job_id"],
        "MLFLOW_TRACKING_URI": deps.settings.tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": "digits",
        "AIP_MODEL_DIR": run.job["model_dir"],
    }
    assert env["CTFLOW_TRACEPARENT"].split("-")[1] == run.trace_id
    assert "CTFLOW_REPORT_URI" not in env  # no completion-handler URL is configured here


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_a_dataset_arrival_trains_with_the_champions_hyperparameters(deps, launcher, arrived, tmp_path):
    """The registry's champion (alias `champion`, tag ctflow.hyperparameters) lends its hyperparameters."""
    from mlflow import MlflowClient

    deps.settings.mlflow_tracking_uri = f"sqlite:///{tmp_path / 'registry.db'}"
    client = MlflowClient(deps.settings.tracking_uri, registry_uri=deps.settings.tracking_uri)
    client.create_registered_model("digits")
    champion = {"model": "cnn", "lr": 0.01, "hidden_units": 64, "epochs": 3}
    version = client.create_model_version(
        "digits", (tmp_path / "model").as_uri(), tags={"ctflow.hyperparameters": json.dumps(champion)}
    )
    client.set_registered_model_alias("digits", "champion", version.version)

    assert _deliver(deps, launcher, events.DATASET_ARRIVED, arrived)["status"] == "processed"
    run = _run(deps, arrived)
    assert run.hyperparameters == {**deps.pipelines.get("digits").hyperparameters.defaults, **champion}
    assert run.trigger["hyperparameters_from"] == f"champion v{version.version}"
    assert json.loads(_process_environment(run.job)["CTFLOW_HYPERPARAMETERS"]) == run.hyperparameters


# ---- jobs that end without reporting -------------------------------------------------------


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_a_sigkilled_trainer_is_reported_failed_and_the_next_request_trains(deps, launcher, consumer, arrived):
    """SIGKILL mid-training: one tick emits a failed completion naming SIGKILL; the next run trains and reports."""
    killed = _request(consumer, LONG, "m-long")
    _deliver(deps, launcher, events.TRAINING_REQUESTED, killed)
    job = _run(deps, killed).job
    checkpoints = Path(job["output_uri"]) / "checkpoints"
    wait_for(lambda: any(checkpoints.glob("ckpt-*.pt")), timeout=120, interval=0.2)  # it is training
    os.kill(_pid(job), signal.SIGKILL)
    wait_for(lambda: deps.training.status(job["job_id"]).ended, timeout=10)
    assert reconcile_jobs(deps)["completions_emitted"] == 1
    [event] = _outbox_events(deps, events.TRAINING_COMPLETED, killed)
    assert (event["id"], event["source"]) == (f"training-completed-{killed}", "//ctflow/job-launcher")
    assert event["data"]["status"] == "failed" and "killed by SIGKILL" in event["data"]["error"]
    assert reconcile_jobs(deps)["completions_emitted"] == 0  # once

    with recording_server([]) as (url, completion_handler):
        deps.settings.service_urls = {"completion-handler": url}  # as a job-launcher started with that setting
        deps.trainer_report_uri = bootstrap.trainer_report_uri(deps.settings)
        retry = _request(consumer, QUICK, "m-again")
        assert _deliver(deps, launcher, events.TRAINING_REQUESTED, retry)["detail"] == f"run {retry} is training"
        waiting = _request(consumer, QUICK, "m-later")
        assert _deliver(deps, launcher, events.TRAINING_REQUESTED, waiting)["detail"] == f"run {waiting} is queued"
        report = _wait_for_report(deps, retry)
        assert report["data"]["status"] == "succeeded" and report["data"]["job_id"] == f"local/{retry}/1"
        wait_for(lambda: completion_handler.requests, timeout=30)
    [(headers, _)] = completion_handler.requests
    assert headers["ce-id"] == f"training-completed-{retry}"

    # Embedded: the report went to the completion-handler only, which moves the run on; the
    # next tick records how the job ended and hands its slot to the waiting run.
    with deps.ledger.transaction() as tx:
        runs.transition(tx, runs.get(tx, retry), "evaluating", "completion-handler")
    wait_for(lambda: deps.training.find(retry).ended, timeout=30)
    assert reconcile_jobs(deps) == {"jobs_launched": 0, "completions_emitted": 0, "queued_started": 1}
    assert _run(deps, retry).job["state"] == "succeeded" and "ended_at" in _run(deps, retry).job
    assert _run(deps, waiting).state == "training" and _run(deps, waiting).job["job_id"] == f"local/{waiting}/1"


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_a_lost_report_is_re_emitted_by_reconcile_with_the_trainers_event_id(deps, launcher, consumer, arrived):
    """The job succeeded and wrote completion.json but its report reached no one: reconcile sends that event."""
    run_id = _request(consumer, QUICK, "m-1")
    _deliver(deps, launcher, events.TRAINING_REQUESTED, run_id)
    report = _wait_for_report(deps, run_id)
    wait_for(lambda: deps.training.find(run_id).ended, timeout=30)
    assert reconcile_jobs(deps)["completions_emitted"] == 1
    [event] = _outbox_events(deps, events.TRAINING_COMPLETED, run_id)
    assert (event["id"], event["source"]) == (report["id"], "//ctflow/trainer")
    assert event["data"] == report["data"] and event["data"]["status"] == "succeeded"
    assert reconcile_jobs(deps)["completions_emitted"] == 0
    assert _deliver(deps, launcher, events.TRAINING_COMPLETED, run_id)["status"] == "processed"
    assert _run(deps, run_id).job["state"] == "succeeded"


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "data", "expected"),
    [
        (
            events.TRAINING_REQUESTED,
            {"run_id": "digits-0000", "pipeline": "digits", "hyperparameters": {}},
            "names run 'digits-0000', which does not exist in the ledger",
        ),
        (
            events.TRAINING_REQUESTED,
            {"run_id": "RUN", "pipeline": "other", "hyperparameters": {}},
            "names pipeline 'other', which has no spec",
        ),
        (events.TRAINING_REQUESTED, {"run_id": "RUN", "pipeline": "digits"}, "hyperparameters: Field required"),
        (
            events.TRAINING_COMPLETED,
            {"run_id": "digits-0000", "pipeline": "digits", "status": "failed"},
            "names run 'digits-0000', which does not exist in the ledger",
        ),
        (events.DATASET_ARRIVED, {"run_id": "RUN", "pipeline": "digits"}, "dataset: Field required"),
    ],
)
def test_bad_events_become_dead_letters_with_reasons(deps, launcher, arrived, event_type, data, expected):
    """Unknown runs and pipelines, and payloads off their schema: 200, a dead letter, nothing launched."""
    data = {k: (arrived if v == "RUN" else v) for k, v in data.items()}
    event = events.run_event(event_type, "test", data["run_id"], data)
    answer = _deliver_event(launcher, {**event.attributes(), "data": data})
    assert answer["status"] == "rejected" and expected in answer["detail"], answer
    with deps.ledger.transaction() as tx:
        assert tx.get(DeadLetter, answer["dead_letter_id"]).consumer == "job-launcher"
    assert _run(deps, arrived).state == "requested" and not deps.settings.jobs_dir.exists()


def test_a_request_for_a_run_past_requested_is_a_duplicate(deps, launcher, consumer, arrived):
    """A redelivery under another event id for a run already training (or queued) changes nothing."""
    run_id = _request(consumer, QUICK, "m-1")
    assert _deliver(deps, launcher, events.TRAINING_REQUESTED, run_id)["status"] == "processed"
    [request] = _outbox_events(deps, events.TRAINING_REQUESTED, run_id)
    again = _deliver_event(launcher, {**request, "id": "another-id"})
    assert again == {
        "status": "duplicate",
        "detail": f"run {run_id} is already training; nothing to launch",
        "run_ids": [run_id],
    }
    assert [p.name for p in (deps.settings.jobs_dir / run_id).iterdir()] == ["1"]


# ---- helpers -------------------------------------------------------------------------------


def _arrive(deps, listener, folder: Path, version: str) -> str:  # type: ignore[no-untyped-def]
    drop_folder(folder, deps.pipelines.get("digits"), deps.blobs, version)
    headers, body = gcs_event_request(deps.settings.bucket_dir, f"datasets/digits/{version}/_MANIFEST.json")
    [run_id] = listener.post("/", content=body, headers=headers).json()["run_ids"]
    return run_id


def _request(consumer, hyperparameters: dict, message_id: str) -> str:  # type: ignore[no-untyped-def]
    headers, body = push_request({"pipeline": "digits", "hyperparameters": hyperparameters}, message_id)
    [run_id] = consumer.post("/", content=body, headers=headers).json()["run_ids"]
    return run_id


def _claim_without_launching(deps, consumer) -> str:  # type: ignore[no-untyped-def]
    """A run claimed by a delivery whose process died right after commit, before its after-commit launch."""
    run_id = _request(consumer, QUICK, "m-claimed")
    with service_work(deps, JOB_LAUNCHER, "test-claim") as ctx:
        slots.claim(ctx, runs.get(ctx.tx, run_id), {})
    return run_id


def _outbox_rows(deps, event_type: str, run_id: str) -> list[OutboxMessage]:  # type: ignore[no-untyped-def]
    with deps.ledger.transaction() as tx:
        query = select(OutboxMessage).where(OutboxMessage.event_type == event_type).order_by(OutboxMessage.id)
        rows = tx.scalars(query)
        return [r for r in rows if r.attributes.get("ce-subject") == run_id]


def _outbox_events(deps, event_type: str, run_id: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return [
        {**{k[3:]: v for k, v in r.attributes.items() if k.startswith("ce-")}, "data": json.loads(r.data)}
        for r in _outbox_rows(deps, event_type, run_id)
    ]


def _emitted(deps, event_type: str, run_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.event_id for r in _outbox_rows(deps, event_type, run_id)]


def _push(deps, event_type: str, run_id: str) -> tuple[dict[str, str], bytes]:  # type: ignore[no-untyped-def]
    """The Pub/Sub push request of the event in the outbox, as the job-launcher's subscription gets it."""
    [row] = _outbox_rows(deps, event_type, run_id)
    body = push_envelope(
        row.data,
        row.attributes,
        f"msg-{row.id}",
        datetime.now(UTC).isoformat(),
        "projects/test/subscriptions/job-launcher-push",
    )
    return {"content-type": "application/json"}, body


def _post_concurrently(deps, requests: list[tuple[dict[str, str], bytes]]) -> list[dict]:  # type: ignore[no-untyped-def]
    """Each request from its own thread at once, to a job-launcher served over HTTP."""
    from job_launcher.app import create_app

    app = create_app()
    app.state.deps = deps
    with serving(app) as url, ThreadPoolExecutor(len(requests)) as pool:
        answers = pool.map(lambda r: httpx.post(url, headers=r[0], content=r[1], timeout=120), requests)
        return [a.json() for a in answers]


def _deliver(deps, launcher, event_type: str, run_id: str) -> dict:  # type: ignore[no-untyped-def]
    headers, body = _push(deps, event_type, run_id)
    return launcher.post("/", content=body, headers=headers).json()


def _deliver_event(launcher, structured: dict) -> dict:  # type: ignore[no-untyped-def]
    """Push a structured CloudEvent (e.g. a completion.json) in the Pub/Sub binding."""
    attrs = {k: v for k, v in structured.items() if k not in ("data", "datacontenttype")}
    event = events.Event(
        type=attrs.pop("type"),
        source=attrs.pop("source"),
        id=attrs.pop("id"),
        subject=attrs.pop("subject", None),
        time=attrs.pop("time", None),
        data=structured["data"],
        extensions={k: v for k, v in attrs.items() if k != "specversion"},
    )
    data, attributes = to_pubsub(event)
    body = push_envelope(
        data,
        attributes,
        f"msg-{event.id}",
        datetime.now(UTC).isoformat(),
        "projects/test/subscriptions/job-launcher-push",
    )
    return launcher.post("/", content=body, headers={"content-type": "application/json"}).json()


def _run(deps, run_id: str) -> Run:  # type: ignore[no-untyped-def]
    with deps.ledger.transaction() as tx:
        return runs.get(tx, run_id)


def _pid(job: dict) -> int:
    return json.loads((Path(job["output_uri"]) / "job.json").read_text())["pid"]


def _process_environment(job: dict) -> dict[str, str]:
    raw = Path(f"/proc/{_pid(job)}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def _wait_for_report(deps, run_id: str) -> dict:  # type: ignore[no-untyped-def]
    """The completion.json the run's trainer wrote, once it has (a real training run: up to a minute here)."""
    report = Path(_run(deps, run_id).job["model_dir"]) / "completion.json"
    wait_for(report.exists, timeout=180, interval=0.2)
    return json.loads(report.read_text())


def _stop_every_job(deps) -> None:  # type: ignore[no-untyped-def]
    """Trainer processes outlive nothing: cancel what a test left running and wait for it to end."""
    jobs_dir = deps.settings.jobs_dir
    for run_dir in jobs_dir.iterdir() if jobs_dir.exists() else []:
        status = deps.training.find(run_dir.name)
        if status is not None and not status.ended:
            deps.training.cancel(status.job_id)
            wait_for(lambda job_id=status.job_id: deps.training.status(job_id).ended, timeout=30, interval=0.1)
