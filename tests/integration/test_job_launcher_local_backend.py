"""LocalProcessBackend: real trainer processes, their exit status, timeouts, and finding jobs again after
the launcher restarts (from the job folder alone, checking the pid is still the same process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ctflow.pipelines import load_spec
from ctflow.settings import REPO_ROOT, Settings
from ctflow.training import JobRequest, JobStatus
from ctflow.training.environment import trainer_environment
from ctflow.training.local import LocalProcessBackend
from tests.support import wait_for

LONG = {"model": "cnn", "epochs": 200, "patience": 50, "lr": 1e-5}  # trains for far longer than any test waits
BROKEN = {"learning_rate": 0.1}  # not a hyperparameter: the trainer fails before training


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def backend(settings: Settings):  # type: ignore[no-untyped-def]
    backend = LocalProcessBackend(settings)
    yield backend
    for run_dir in settings.jobs_dir.iterdir() if settings.jobs_dir.exists() else []:
        status = backend.find(run_dir.name)
        if status is not None and not status.ended:
            backend.cancel(status.job_id)
            _wait_until_ended(backend, status.job_id)


def request(
    settings: Settings, folder: Path, run_id: str, hyperparameters: dict[str, Any], **training: Any
) -> JobRequest:
    spec = load_spec(REPO_ROOT / "deploy" / "pipelines" / "digits.yaml")
    env = trainer_environment(
        settings,
        report_uri=None,
        run_id=run_id,
        pipeline="digits",
        dataset_uri=str(folder),
        hyperparameters=hyperparameters,
        trigger_event_id=f"evt-{run_id}",
        image="trainer",
    )
    return JobRequest(run_id, "digits", spec.training.model_copy(update=training), env, {"ctflow-run-id": run_id})


def test_a_failing_trainer_reports_its_exit_code_and_the_end_of_stderr(backend, settings, digits_folder, tmp_path):
    """Exit 1: failed with the code and stderr's last lines; shell syntax in hyperparameters stays inert data."""
    marker = tmp_path / "shell-ran"
    hostile = {**BROKEN, "model": f"$(touch {marker}); `touch {marker}`"}
    started = backend.launch(request(settings, digits_folder, "run-broken", hostile))
    assert (started.job_id, started.state) == ("local/run-broken/1", "running")
    ended = _wait_until_ended(backend, started.job_id)
    assert ended.state == "failed" and ended.error.startswith("trainer exited with code 1: ")
    assert "learning_rate" in ended.error and not marker.exists()
    logs = started.logs
    assert "learning_rate" in Path(logs["stderr"]).read_text()
    assert json.loads((Path(ended.model_dir) / "completion.json").read_text())["data"]["status"] == "failed"


def test_a_job_past_its_timeout_is_stopped_and_failed(backend, settings, digits_folder):
    """Polling enforces the spec's timeout: the process group is stopped and the job fails saying why."""
    started = backend.launch(request(settings, digits_folder, "run-slow", LONG, timeout_seconds=1))
    ended = _wait_until_ended(backend, started.job_id)
    assert (ended.state, ended.error) == ("failed", "timed out after 1 s")
    assert not Path(f"/proc/{_record(ended)['pid']}").exists()


def test_a_running_job_is_found_again_by_a_launcher_that_did_not_start_it(settings, backend, digits_folder):
    """The launcher that started it is gone: find() still sees it running, and cancel() stops it."""
    _launch_from_another_process(settings, digits_folder, "run-orphan", LONG)
    found = backend.find("run-orphan")
    assert (found.job_id, found.state, found.output_uri) == (
        "local/run-orphan/1",
        "running",
        str(settings.jobs_dir / "run-orphan" / "1"),
    )
    backend.cancel(found.job_id)
    assert (_wait_until_ended(backend, found.job_id).state, backend.status(found.job_id).error) == (
        "cancelled",
        "cancelled",
    )
    assert backend.find("run-missing") is None


def test_a_job_that_ended_under_another_launcher_is_judged_by_its_report(settings, backend, digits_folder):
    """Its exit status went to another parent; the completion.json it wrote says how it ended."""
    _launch_from_another_process(settings, digits_folder, "run-elsewhere", BROKEN)
    ended = _wait_until_ended(backend, "local/run-elsewhere/1")
    assert ended.state == "failed" and "learning_rate" in ended.error
    assert not ended.error.startswith("trainer exited")  # the code itself was not ours to read


def test_a_reused_pid_is_not_mistaken_for_the_job(settings, backend, digits_folder):
    """A live process under the job's pid but with another start time is not the job: the job has ended."""
    started = backend.launch(request(settings, digits_folder, "run-reused", BROKEN))
    _wait_until_ended(backend, started.job_id)
    record = _record(started)
    record.pop("exit")
    record["pid"] = os.getpid()  # alive, but not the process that was started (its start time differs)
    (Path(started.output_uri) / "job.json").write_text(json.dumps(record))
    fresh = LocalProcessBackend(settings).status(started.job_id)
    assert fresh.state == "failed" and "learning_rate" in fresh.error


def test_a_trainer_started_by_a_launcher_that_died_before_noting_its_pid_is_adopted(settings, backend, digits_folder):
    """The job folder names the job but no pid: the process carrying the job's id is found and adopted."""
    started = backend.launch(request(settings, digits_folder, "run-unnoted", LONG))
    record = _record(started)
    pid = record.pop("pid")
    (Path(started.output_uri) / "job.json").write_text(json.dumps(record))
    adopted = LocalProcessBackend(settings).find("run-unnoted")
    assert (adopted.job_id, adopted.state, _record(adopted)["pid"]) == (started.job_id, "running", pid)


def _launch_from_another_process(settings: Settings, folder: Path, run_id: str, hyperparameters: dict) -> None:
    """Launch as a launcher process that then exits (the embedded stack stopping), leaving the trainer behind."""
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from ctflow.settings import Settings\n"
        "from ctflow.training.local import LocalProcessBackend\n"
        "from tests.integration.test_job_launcher_local_backend import request\n"
        "home, tracking, folder, run_id, hp = sys.argv[1:]\n"
        "settings = Settings(home=home, mlflow_tracking_uri=tracking)\n"
        "LocalProcessBackend(settings).launch(request(settings, Path(folder), run_id, json.loads(hp)))\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(settings.home),
            settings.tracking_uri,
            str(folder),
            run_id,
            json.dumps(hyperparameters),
        ],
        check=True,
        cwd=REPO_ROOT,
        timeout=60,
    )


def _record(status: JobStatus) -> dict:
    return json.loads((Path(status.output_uri) / "job.json").read_text())


def _wait_until_ended(backend: LocalProcessBackend, job_id: str) -> JobStatus:
    return wait_for(lambda: (s := backend.status(job_id)).ended and s, timeout=120, interval=0.1)


def _children_of_this_process() -> dict[int, str]:
    """pid -> state letter of every child process of this test process, from /proc."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        state, ppid = raw[raw.rindex(")") + 2 :].split()[:2]
        if int(ppid) == os.getpid():
            children[int(stat.parent.name)] = state
    return children


def test_twenty_finished_trainer_processes_leave_no_zombie(backend, settings, digits_folder):
    """Trainer processes that end are reaped at once, whether or not anyone asks about their job, and their
    exit status is still known afterwards (a stack that trains every hour for a month accumulates nothing)."""
    quick = ["python", "-c", "import time; time.sleep(0.3)"]
    started = [backend.launch(request(settings, digits_folder, f"run-{n}", {}, entrypoint=quick)) for n in range(20)]
    pids = {json.loads((Path(s.output_uri) / "job.json").read_text())["pid"] for s in started}
    assert len(pids) == 20

    def ended(pid: int) -> bool:  # gone, or a zombie waiting for its parent
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return state == "Z"

    wait_for(lambda: all(ended(pid) for pid in pids), timeout=60, interval=0.1)
    wait_for(lambda: not (pids & set(_children_of_this_process())), timeout=5, interval=0.05)
    assert [state for state in _children_of_this_process().values() if state == "Z"] == []
    assert {backend.status(s.job_id).state for s in started} == {"succeeded"}
