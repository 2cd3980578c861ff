"""Embedded training backend: each job is the spec's trainer entrypoint run as a child process.

One folder per attempt, `<jobs_dir>/<run_id>/<attempt>/`, holds everything about the job:
`job.json` (run label, argv, pid and the kernel's start time of that pid, exit status once
known), `stdout.log`/`stderr.log`, and Vertex's output layout (`model/`, `checkpoints/`).
So `find(run_id)` works from the folder alone, also after the embedded stack restarts.

A pid alone can be reused by an unrelated process; liveness checks the pid AND its start
time in /proc. The trainer runs in its own session (its pid is its process group) so a
cancel or timeout stops everything it started. Only the process that started a job can
read its exit status; after a restart the trainer's own `completion.json` says how it
ended. The trainer picks CUDA itself when present. Nothing reaches a shell: argv lists only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import write_atomically
from ..supervisor import SUPERVISOR, is_alive, labelled_process, start_ticks
from . import JobRequest, JobState, JobStatus

if TYPE_CHECKING:
    from ..settings import Settings

JOB_FILE = "job.json"
JOB_ID_VARIABLE = "CTFLOW_JOB_ID"  # the job's label in its environment: how a restarted stack adopts it
CANCEL_GRACE_SECONDS = 5.0  # after SIGTERM, this long until SIGKILL
START_TIMEOUT_SECONDS = 30.0  # a job recorded this long ago with no process never started
STDERR_TAIL_LINES = 5
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# What a trainer must not inherit from the launcher's environment: ctflow's own settings
# (its contract is the request's env, as in a Vertex container), Vertex's variables, and
# MLflow's run selectors (a stray MLFLOW_RUN_ID would make it resume someone else's run).
# MLflow credentials and the like pass through.
_NOT_INHERITED = ("CTFLOW_", "AIP_", "CLOUD_ML_", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")


class LocalProcessBackend:
    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.jobs_dir = settings.jobs_dir
        self.python = settings.trainer_python or sys.executable
        self._lock = threading.Lock()

    # ---- the port ---------------------------------------------------------------------

    def find(self, run_id: str) -> JobStatus | None:
        recorded = [folder for folder in self._attempts(run_id) if (folder / JOB_FILE).exists()]
        return self._status(recorded[-1]) if recorded else None

    def launch(self, request: JobRequest) -> JobStatus:
        with self._lock:  # a find() in this process never sees a job half-way through its start
            folder = self._new_attempt(request.run_id)
            try:
                self._start(folder, request)
            except OSError:
                shutil.rmtree(folder, ignore_errors=True)  # no process: no job (the caller may retry)
                raise
        return self._status(folder)

    def _start(self, folder: Path, request: JobRequest) -> None:
        job_id = f"local/{request.run_id}/{folder.name}"
        argv = [
            self.python if i == 0 and part in ("python", "python3") else part
            for i, part in enumerate(request.training.entrypoint)
        ]
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
        env = {
            **inherited,
            **request.env,
            JOB_ID_VARIABLE: job_id,
            "AIP_MODEL_DIR": str(folder / "model"),
            "AIP_CHECKPOINT_DIR": str(folder / "checkpoints"),
        }
        record: dict[str, Any] = {
            "job_id": job_id,
            "run_id": request.run_id,
            "pipeline": request.pipeline,
            "labels": request.labels,
            "argv": argv,
            "timeout_seconds": request.training.timeout_seconds,
            "created_at": time.time(),
        }
        _write_record(folder, record)  # before the process exists: a crash now leaves a findable trace
        with (folder / "stdout.log").open("ab") as out, (folder / "stderr.log").open("ab") as err:
            pid = SUPERVISOR.start(argv, cwd=folder, env=env, stdout=out, stderr=err)
        _write_record(folder, {**record, "pid": pid, "start_ticks": start_ticks(pid), "started_at": time.time()})

    def status(self, job_id: str) -> JobStatus:
        return self._status(self._folder(job_id))

    def cancel(self, job_id: str) -> None:
        folder = self._folder(job_id)
        with self._lock:
            record = _read_record(folder)
            if "exit" in record or not self._alive(record):
                return
            _write_record(folder, {**record, "cancelled": {"reason": "cancelled", "at": time.time()}})
            SUPERVISOR.stop(record["pid"])

    # ---- job folders --------------------------------------------------------------------

    def _run_folder(self, run_id: str) -> Path:
        if not _RUN_ID.match(run_id):
            raise ValueError(f"run id {run_id!r} cannot name a job folder")
        return self.jobs_dir / run_id

    def _attempts(self, run_id: str) -> list[Path]:
        """The run's job folders, oldest first (numbered 1, 2, ...)."""
        base = self._run_folder(run_id)
        numbered = [p for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
        return sorted(numbered, key=lambda p: int(p.name))

    def _new_attempt(self, run_id: str) -> Path:
        attempts = self._attempts(run_id)
        folder = self._run_folder(run_id) / str(int(attempts[-1].name) + 1 if attempts else 1)
        folder.mkdir(parents=True)
        return folder

    def _folder(self, job_id: str) -> Path:
        scheme, _, rest = job_id.partition("/")
        run_id, _, attempt = rest.partition("/")
        if scheme != "local" or not attempt.isdigit() or not _RUN_ID.match(run_id):
            raise KeyError(f"{job_id!r} is not a local job id")
        folder = self.jobs_dir / run_id / attempt
        if not (folder / JOB_FILE).exists():
            raise KeyError(f"no local job {job_id!r} in {self.jobs_dir}")
        return folder

    # ---- state ---------------------------------------------------------------------------

    def _status(self, folder: Path) -> JobStatus:
        with self._lock:
            record = _read_record(folder)
            if "exit" not in record:
                record = self._observe(folder, record)
        logs = {"stdout": str(folder / "stdout.log"), "stderr": str(folder / "stderr.log")}
        return replace(_as_status(folder, record), logs=logs)

    def _observe(self, folder: Path, record: dict[str, Any]) -> dict[str, Any]:
        """Refresh a job not known to have ended: adopt, reap, time out or escalate a cancel."""
        if "pid" not in record and (pid := labelled_process(JOB_ID_VARIABLE, record["job_id"])) is not None:
            record = {**record, "pid": pid, "start_ticks": start_ticks(pid), "started_at": time.time()}
            _write_record(folder, record)  # the launcher stopped between starting and recording it
        if "pid" not in record and time.time() - record["created_at"] < START_TIMEOUT_SECONDS:
            return record  # another process may be starting it right now
        ours, code = SUPERVISOR.exit_status(record["pid"]) if "pid" in record else (False, None)
        if "pid" not in record:
            exit_info: dict[str, Any] = {"returncode": None, "never_started": True}
        elif code is not None:
            exit_info = {"returncode": code}
        elif not ours and not self._alive(record):
            exit_info = {"returncode": None}  # not our child: its status went to its new parent
        else:
            self._enforce_deadlines(folder, record)
            return record
        record = {**record, "exit": {**exit_info, "ended_at": time.time()}}
        _write_record(folder, record)
        SUPERVISOR.forget(record.get("pid", -1))
        return record

    def _enforce_deadlines(self, folder: Path, record: dict[str, Any]) -> None:
        now, cancelled = time.time(), record.get("cancelled")
        if cancelled is None and now - record["started_at"] > record["timeout_seconds"]:
            reason = f"timed out after {record['timeout_seconds']} s"
            _write_record(folder, {**record, "cancelled": {"reason": reason, "at": now, "timeout": True}})
            SUPERVISOR.stop(record["pid"])
        elif cancelled is not None and now - cancelled["at"] > CANCEL_GRACE_SECONDS:
            SUPERVISOR.stop(record["pid"], graceful=False)

    @staticmethod
    def _alive(record: dict[str, Any]) -> bool:
        return "pid" in record and is_alive(record["pid"], record.get("start_ticks"))


def _as_status(folder: Path, record: dict[str, Any]) -> JobStatus:
    exit_info, output = record.get("exit"), str(folder)
    if exit_info is None:
        return JobStatus(record["job_id"], "running" if "pid" in record else "pending", output)
    ended_at, code, cancelled = exit_info["ended_at"], exit_info["returncode"], record.get("cancelled")
    if cancelled is not None:
        state: JobState = "failed" if cancelled.get("timeout") else "cancelled"
        return JobStatus(record["job_id"], state, output, cancelled["reason"], ended_at)
    if code == 0:
        return JobStatus(record["job_id"], "succeeded", output, None, ended_at)
    if code is not None and code < 0:
        error = f"trainer process was killed by {signal.Signals(-code).name}"
    elif code is not None:
        error = f"trainer exited with code {code}: {_tail(folder / 'stderr.log')}"
    elif exit_info.get("never_started"):
        error = "the launcher stopped before the trainer process started"
    else:
        return _reported(folder, record, ended_at)
    return JobStatus(record["job_id"], "failed", output, error, ended_at)


def _reported(folder: Path, record: dict[str, Any], ended_at: float) -> JobStatus:
    """A job that ended while another process was its parent: its completion.json tells how."""
    state: JobState
    try:
        data = json.loads((folder / "model" / "completion.json").read_bytes())["data"]
        state, error = ("succeeded", None) if data["status"] == "succeeded" else ("failed", data.get("error"))
    except (OSError, ValueError, KeyError, TypeError):
        state = "failed"
        error = (
            f"trainer process {record['pid']} ended without writing completion.json (killed or crashed; "
            "its exit status was lost when the launcher restarted)"
        )
    return JobStatus(record["job_id"], state, str(folder), error, ended_at)


def _tail(path: Path) -> str:
    try:
        lines = path.read_bytes()[-8192:].decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return "(no stderr.log)"
    return " | ".join(lines[-STDERR_TAIL_LINES:])[-2000:] or "(stderr was empty)"


def _read_record(folder: Path) -> dict[str, Any]:
    return json.loads((folder / JOB_FILE).read_text())


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    write_atomically(folder / JOB_FILE, json.dumps(record, indent=2, sort_keys=True).encode())
