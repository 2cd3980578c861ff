"""The Vertex AI backend drives the real JobServiceClient against a fake JobService that runs real jobs.

The fake (tests/fakes/vertex_server.py) speaks Vertex's v1 REST API and runs each
CustomJob's container as a local process; the trainer jobs here are real (torch, MLflow
on SQLite, the digits sample), only tiny.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core.exceptions import ServiceUnavailable

from ctflow.contracts import MachineSpec, PipelineSpec, TrainingSpec
from ctflow.pipelines import PipelineCatalog
from ctflow.settings import REPO_ROOT, Settings
from ctflow.training import RUN_LABEL, JobRefused, JobRequest, JobStatus
from ctflow.training.environment import trainer_environment
from ctflow.training.vertex import VertexBackend, label_value
from tests.fakes.vertex_server import FakeJobService, fake_vertex
from tests.integration.trainer import conftest as trainer_fixtures
from tests.support import wait_for

pytestmark = pytest.mark.integration

PROJECT, REGION, BUCKET = "ctflow-test", "europe-west4", "ctflow-data"
TRAINER_IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/ctflow/trainer@sha256:{'a' * 64}"
TRAINER_SA = f"trainer@{PROJECT}.iam.gserviceaccount.com"
# What the trainer image's Dockerfile sets (ENV), which a container has before the job's env.
IMAGE_ENV = {"PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}

mlflow_uri = trainer_fixtures.mlflow_uri  # real MLflow on SQLite, the fixture the trainer tests use


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeJobService]:
    root = tmp_path_factory.mktemp("vertex")
    with fake_vertex(root / "workers", buckets={BUCKET: root / "bucket"}, image_env=IMAGE_ENV) as service:
        yield service


@pytest.fixture(scope="module")
def backend(fake: FakeJobService, tmp_path_factory: pytest.TempPathFactory) -> VertexBackend:
    settings = Settings(
        mode="gcp",
        home=tmp_path_factory.mktemp("home"),
        gcp_project=PROJECT,
        gcp_region=REGION,
        bucket=BUCKET,
        database_url="sqlite://",
        allowed_invokers=[f"invoker@{PROJECT}.iam.gserviceaccount.com"],
        oidc_audience="https://job-launcher.example.run.app",
        vertex_api_endpoint=fake.endpoint,
        images={"trainer": TRAINER_IMAGE},
        trainer_service_account=TRAINER_SA,
    )
    return VertexBackend(settings)


@pytest.fixture(scope="module")
def digits() -> PipelineSpec:
    spec = PipelineCatalog(REPO_ROOT / "deploy" / "pipelines").get("digits")
    assert spec is not None
    return spec


def new_run_id() -> str:
    return f"digits-{uuid.uuid4().hex[:16]}"


def trainer_env(
    backend: VertexBackend, run_id: str, dataset_uri: str, tracking_uri: str, epochs: int = 3
) -> dict[str, str]:
    """The environment the job launcher gives the run's trainer (ctflow.training.environment).

    Without the Pub/Sub report address: no emulator here, the tests read completion.json.
    """
    settings = backend.settings.model_copy(update={"mlflow_tracking_uri": tracking_uri})
    env = trainer_environment(
        settings,
        report_uri=None,
        run_id=run_id,
        pipeline="digits",
        dataset_uri=dataset_uri,
        hyperparameters={"epochs": epochs, "patience": 50},
        trigger_event_id=f"evt-{run_id}",
        image="trainer",
    )
    assert "CTFLOW_REPORT_URI" not in env
    return {**env, "CTFLOW_TORCH_THREADS": "1"}


def request(run_id: str, training: TrainingSpec, env: dict[str, str] | None = None) -> JobRequest:
    return JobRequest(run_id=run_id, pipeline="digits", training=training, env=env or {}, labels={RUN_LABEL: run_id})


def command(code: str) -> TrainingSpec:
    """A job whose container runs a line of Python instead of the trainer, on a CPU machine."""
    return TrainingSpec(
        image="trainer",
        entrypoint=["python", "-c", code],
        machine=MachineSpec(type="n1-standard-4", accelerator_type=None, accelerator_count=0),
    )


def poll_until_ended(
    backend: VertexBackend, fake: FakeJobService, job_id: str, timeout: float = 180
) -> tuple[list[str], JobStatus]:
    """Poll the job as reconcile does; returns the states seen, in order, and the final status."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        status = backend.status(job_id)
        if not seen or seen[-1] != status.state:
            seen.append(status.state)
        if status.ended:
            return seen, status
        assert time.monotonic() < deadline, f"job still {status.state}; log:\n{worker_log(fake, job_id)}"
        time.sleep(0.05)


def worker_log(fake: FakeJobService, job_id: str) -> str:
    path = fake.jobs[job_id].container.log_path
    return path.read_text()[-4000:] if path.exists() else "(no log)"


def completion(fake: FakeJobService, status: JobStatus) -> dict[str, Any]:
    """The structured CloudEvent the trainer left in the job's model folder."""
    return json.loads((fake.local_path(status.model_dir) / "completion.json").read_bytes())


def created_for(fake: FakeJobService, run_id: str) -> list[dict[str, Any]]:
    return [job for job in fake.created() if job["labels"].get(RUN_LABEL) == run_id]


def test_launch_creates_the_custom_job_the_spec_and_request_describe(
    fake: FakeJobService, backend: VertexBackend, digits: PipelineSpec
) -> None:
    """Machine, T4 accelerator, spot, timeout, built image, command, env, labels, identity and output are sent."""
    run_id = new_run_id()
    env = trainer_environment(
        backend.settings,
        report_uri=None,
        run_id=run_id,
        pipeline="digits",
        dataset_uri=f"gs://{BUCKET}/datasets/digits/v1/",
        hyperparameters={"lr": 0.01},
        trigger_event_id="evt-1",
        image="trainer",
    )
    status = backend.launch(request(run_id, digits.training, env))
    backend.cancel(status.job_id)  # only the request matters here: stop the job before its worker starts

    assert status.job_id.startswith(f"projects/{PROJECT}/locations/{REGION}/customJobs/")
    assert status.state == "pending" and status.output_uri == f"gs://{BUCKET}/runs/{run_id}/"
    assert status.model_dir == f"gs://{BUCKET}/runs/{run_id}/model"
    [job] = created_for(fake, run_id)
    assert job == {
        "displayName": f"ctflow-{run_id}",
        "labels": {"ctflow-run-id": run_id, "ctflow-pipeline": "digits"},
        "jobSpec": {
            "workerPoolSpecs": [
                {
                    "replicaCount": "1",
                    "machineSpec": {
                        "machineType": "n1-standard-4",
                        "acceleratorType": "NVIDIA_TESLA_T4",
                        "acceleratorCount": 1,
                    },
                    "containerSpec": {
                        "imageUri": TRAINER_IMAGE,
                        "command": ["python", "-m", "ctflow_trainer"],
                        "env": [{"name": k, "value": v} for k, v in env.items()],
                    },
                }
            ],
            "scheduling": {"timeout": "3600s", "restartJobOnWorkerRestart": True, "strategy": "SPOT"},
            "serviceAccount": TRAINER_SA,
            "baseOutputDirectory": {"outputUriPrefix": f"gs://{BUCKET}/runs/{run_id}/"},
        },
    }
    sent = {var["name"]: var["value"] for var in job["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["env"]}
    assert sent["CTFLOW_RUN_ID"] == run_id and sent["CTFLOW_DATASET_URI"] == f"gs://{BUCKET}/datasets/digits/v1/"
    assert sent["MLFLOW_TRACKING_URI"] == backend.settings.tracking_uri
    assert json.loads(sent["CTFLOW_HYPERPARAMETERS"]) == {"lr": 0.01}
    worker_env = fake.jobs[status.job_id].container.env  # what Vertex gives the container on top
    run_folder = fake.local_path(status.output_uri)
    assert worker_env["AIP_MODEL_DIR"] == f"{run_folder}/model/"
    assert worker_env["AIP_CHECKPOINT_DIR"] == f"{run_folder}/checkpoints/"
    assert worker_env["CLOUD_ML_JOB_ID"] == status.job_id.rsplit("/", 1)[1]


def test_a_cpu_machine_has_no_accelerator_and_the_spec_service_account_wins(
    fake: FakeJobService, backend: VertexBackend
) -> None:
    """accelerator_count 0 sends no accelerator; not spot sends no strategy; the spec's account beats the default."""
    run_id = new_run_id()
    training = TrainingSpec(
        image="registry.example/other:1",
        entrypoint=["python", "-c", "pass"],
        machine=MachineSpec(type="e2-standard-8", accelerator_type="NVIDIA_TESLA_T4", accelerator_count=0, spot=False),
        timeout_seconds=600,
        service_account="special@ctflow-test.iam.gserviceaccount.com",
    )
    backend.launch(request(run_id, training))

    [job] = created_for(fake, run_id)
    [pool] = job["jobSpec"]["workerPoolSpecs"]
    assert pool["machineSpec"] == {"machineType": "e2-standard-8"}
    assert pool["containerSpec"]["imageUri"] == "registry.example/other:1"  # not a skaffold artifact: as given
    assert job["jobSpec"]["scheduling"] == {"timeout": "600s", "restartJobOnWorkerRestart": True}
    assert job["jobSpec"]["serviceAccount"] == "special@ctflow-test.iam.gserviceaccount.com"


def test_looking_up_before_launching_gives_one_job_per_run(fake: FakeJobService, backend: VertexBackend) -> None:
    """find() by the run label returns the run's job (the newest if there are several), never another run's."""
    run_id, other_run = new_run_id(), new_run_id()
    assert backend.find(run_id) is None

    def launch_once() -> JobStatus:  # what the job launcher does after claiming the run
        return backend.find(run_id) or backend.launch(request(run_id, command("import time; time.sleep(30)")))

    first, again = launch_once(), launch_once()
    backend.launch(request(other_run, command("pass")))
    assert again.job_id == first.job_id
    assert len(created_for(fake, run_id)) == 1
    found = backend.find(run_id)
    assert found is not None and found.job_id == first.job_id

    retry = backend.launch(request(run_id, command("pass")))  # a second attempt for the same run
    found = backend.find(run_id)
    assert found is not None and found.job_id == retry.job_id != first.job_id
    backend.cancel(first.job_id)


def test_a_trainer_job_is_polled_to_success_and_leaves_its_completion(
    fake: FakeJobService, backend: VertexBackend, digits: PipelineSpec, digits_folder: Path, mlflow_uri: str
) -> None:
    """The real trainer, 3 epochs: pending -> running -> succeeded, completion.json and model in AIP_MODEL_DIR."""
    from mlflow import MlflowClient

    run_id = new_run_id()
    env = trainer_env(backend, run_id, str(digits_folder), mlflow_uri)
    status = backend.launch(request(run_id, digits.training, env))

    seen, final = poll_until_ended(backend, fake, status.job_id)
    assert seen == ["pending", "running", "succeeded"], worker_log(fake, status.job_id)
    assert final.error is None and final.ended_at is not None
    event = completion(fake, final)
    data = event["data"]
    assert event["type"] == "ctflow.training.completed.v1" and event["subject"] == run_id
    assert data["status"] == "succeeded" and data["epochs_completed"] == 3 and data["resumed_from_epoch"] is None
    assert data["job_id"] == status.job_id.rsplit("/", 1)[1]  # CLOUD_ML_JOB_ID, set by Vertex
    assert (fake.local_path(final.model_dir) / "model.pt").stat().st_size > 0
    assert MlflowClient(mlflow_uri).get_run(data["mlflow_run_id"]).info.status == "FINISHED"


def test_a_restarted_job_resumes_from_its_last_checkpoint(
    fake: FakeJobService, backend: VertexBackend, digits: PipelineSpec, digits_folder: Path, mlflow_uri: str
) -> None:
    """The worker is killed after a checkpoint and started again (a preemption): it resumes and succeeds."""
    from mlflow import MlflowClient

    run_id = new_run_id()
    env = trainer_env(backend, run_id, str(digits_folder), mlflow_uri, epochs=4)
    status = backend.launch(request(run_id, digits.training, env))
    checkpoints = fake.local_path(status.output_uri) / "checkpoints"
    wait_for(lambda: any(checkpoints.glob("ckpt-*.pt")), timeout=120, interval=0.01)
    fake.restart(status.job_id)

    seen, final = poll_until_ended(backend, fake, status.job_id)
    assert final.state == "succeeded", worker_log(fake, status.job_id)
    assert "pending" not in seen[1:]  # a worker restart does not send the job back to the queue
    first, second = fake.jobs[status.job_id].container.attempts
    assert first.returncode == -9 and second.returncode == 0
    data = completion(fake, final)["data"]
    assert data["status"] == "succeeded" and data["epochs_completed"] == 4
    assert data["resumed_from_epoch"] >= 1
    experiment = MlflowClient(mlflow_uri).get_experiment_by_name("digits")
    runs = MlflowClient(mlflow_uri).search_runs([experiment.experiment_id], f"tags.`ctflow.run_id` = '{run_id}'")
    assert [run.info.run_id for run in runs] == [data["mlflow_run_id"]]  # resumed into the same MLflow run


def test_a_failing_job_ends_failed_with_the_reason(
    fake: FakeJobService, backend: VertexBackend, digits: PipelineSpec, mlflow_uri: str, tmp_path: Path
) -> None:
    """A bad dataset URI: the trainer reports why and exits 1; Vertex's failure names the exit status."""
    run_id = new_run_id()
    missing = tmp_path / "no-such-dataset"
    env = trainer_env(backend, run_id, str(missing), mlflow_uri)
    status = backend.launch(request(run_id, digits.training, env))

    _, final = poll_until_ended(backend, fake, status.job_id)
    assert final.state == "failed"
    assert final.error is not None and "exited with a non-zero status of 1" in final.error
    data = completion(fake, final)["data"]
    assert data["status"] == "failed" and "no-such-dataset" in data["error"]


def test_cancel_stops_a_running_job_and_leaves_an_ended_one_alone(fake: FakeJobService, backend: VertexBackend) -> None:
    run_id = new_run_id()
    status = backend.launch(request(run_id, command("import time; time.sleep(60)")))
    wait_for(lambda: backend.status(status.job_id).state == "running", timeout=30)

    backend.cancel(status.job_id)
    _, final = poll_until_ended(backend, fake, status.job_id, timeout=30)
    assert final.state == "cancelled"
    [worker] = fake.jobs[status.job_id].container.attempts
    assert worker.returncode is not None  # the process is gone
    backend.cancel(status.job_id)  # Vertex refuses to cancel an ended job; the backend leaves it be
    assert backend.status(status.job_id).state == "cancelled"


def test_transient_api_errors_surface_and_reads_are_retried(fake: FakeJobService, backend: VertexBackend) -> None:
    """503 on create raises (the intake answers 503, Pub/Sub redelivers) and creates nothing; reads retry."""
    run_id = new_run_id()
    fake.fail_next(503)
    with pytest.raises(ServiceUnavailable):
        backend.launch(request(run_id, command("pass")))
    assert created_for(fake, run_id) == [] and fake.requests[-1].status == 503

    asked = len(fake.requests)
    fake.fail_next(503, 500)
    assert backend.find(run_id) is None
    assert len(fake.requests) == asked + 3
    with pytest.raises(KeyError):
        backend.status(f"projects/{PROJECT}/locations/{REGION}/customJobs/404")


def test_a_job_vertex_refuses_raises_job_refused(fake: FakeJobService, backend: VertexBackend) -> None:
    """An accelerator the machine cannot take (Vertex says 400) or one Vertex does not know is refused for good."""
    a100_on_n1 = command("pass").model_copy(
        update={"machine": MachineSpec(type="n1-standard-4", accelerator_type="NVIDIA_TESLA_A100", accelerator_count=1)}
    )
    with pytest.raises(JobRefused, match="cannot take accelerator NVIDIA_TESLA_A100"):
        backend.launch(request(new_run_id(), a100_on_n1))

    asked = len(fake.requests)
    unknown = command("pass").model_copy(update={"machine": MachineSpec(accelerator_type="NVIDIA_TESLA_Z9")})
    with pytest.raises(JobRefused, match="unknown accelerator_type 'NVIDIA_TESLA_Z9'"):
        backend.launch(request(new_run_id(), unknown))
    assert len(fake.requests) == asked  # refused before asking Vertex


def test_label_values_follow_vertex_rules_and_stay_distinct() -> None:
    assert label_value("digits-0123456789abcdef") == "digits-0123456789abcdef"
    long_a, long_b = "Pipeline_" + "x" * 70 + "-a", "Pipeline_" + "x" * 70 + "-b"
    for value in (long_a, "Has Spaces/And.Dots"):
        label = label_value(value)
        assert len(label) <= 63 and set(label) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-")
        assert label_value(value) == label
    assert label_value(long_a) != label_value(long_b)


def test_an_expired_job_is_failed_as_timed_out() -> None:
    """Vertex's EXPIRED becomes failed with a reason naming the timeout (the fake never expires a job)."""
    from google.cloud.aiplatform_v1 import types

    from ctflow.training.vertex import job_status

    job = types.CustomJob(
        name="projects/p/locations/l/customJobs/1",
        state=types.JobState.JOB_STATE_EXPIRED,
        job_spec=types.CustomJobSpec(scheduling=types.Scheduling(timeout={"seconds": 600})),
    )
    status = job_status(job)
    assert status.state == "failed" and status.ended
    assert status.error == "timed out (the job's timeout is 600 s)"
