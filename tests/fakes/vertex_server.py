"""A fake Vertex AI JobService (v1 REST) that really runs the CustomJobs it is given.

Vertex AI has no emulator, so tests drive the real `JobServiceClient` (REST transport)
against this loopback server. It answers the paths and JSON the client sends
(`POST /v1/{parent}/customJobs`, `GET /v1/{name}`, `GET /v1/{parent}/customJobs?filter=`,
`POST /v1/{name}:cancel`), refuses what Vertex refuses where that is cheap to know
(unknown or missing fields, bad labels, an accelerator the machine cannot take), and
records every request for assertions.

A job's container runs as a local process. The image is not pulled: its command runs
with this machine's programs ("python" is this interpreter), in the environment Vertex
gives a container: the image's env, the job's env, `AIP_MODEL_DIR`,
`AIP_CHECKPOINT_DIR` and `AIP_TENSORBOARD_LOG_DIR` under the base output directory,
and `CLOUD_ML_JOB_ID`. Output prefixes are gs:// URIs of buckets the test maps to local
folders (the AIP_* variables then name those folders), or local folders. A job moves
QUEUED -> PENDING -> RUNNING -> SUCCEEDED | FAILED by its process's fate; cancel kills
it (CANCELLED); `restart` kills the worker and starts it again with the same
environment, as Vertex does when a (spot) worker is preempted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from google.cloud.aiplatform_v1.types import CustomJob, JobState
from google.protobuf import json_format

from tests.fakes.json_api import ApiError, JsonApiHandler

_PARENT = r"projects/[^/]+/locations/[^/]+"
_JOB = rf"{_PARENT}/customJobs/[^/:]+"
_ENDED = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}
_CANCELLED = ("JOB_STATE_CANCELLED", 1, "CANCELED")  # state, error code and message of a cancelled job
_HOST_ENV = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL")  # what any container has; nothing else leaks in
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
# The machine families that can carry an accelerator (the common ones; others pass unchecked).
_ACCELERATOR_MACHINES = {
    "NVIDIA_TESLA_T4": ("n1-",),
    "NVIDIA_TESLA_V100": ("n1-",),
    "NVIDIA_TESLA_P100": ("n1-",),
    "NVIDIA_TESLA_P4": ("n1-",),
    "NVIDIA_TESLA_A100": ("a2-highgpu-",),
    "NVIDIA_A100_80GB": ("a2-ultragpu-",),
    "NVIDIA_L4": ("g2-",),
    "NVIDIA_H100_80GB": ("a3-highgpu-",),
}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None
    status: int  # the HTTP status it was answered with

    @property
    def custom_job(self) -> dict[str, Any]:
        """A create request's CustomJob as Vertex reads it (enum names where the wire has numbers)."""
        return _as_json(_parse_custom_job(self.body), ints=False)


def _parse_custom_job(body: dict[str, Any] | None) -> Any:
    job = CustomJob.pb(CustomJob())
    try:
        json_format.ParseDict(body or {}, job)  # unknown fields are refused, as Vertex does
    except json_format.ParseError as exc:
        raise ApiError(400, f"Invalid JSON payload received. {exc}") from None
    return job


def _json_body(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw) if raw else None
    except ValueError as exc:
        raise ApiError(400, f"Invalid JSON payload received. {exc}") from None
    if body is not None and not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON payload received. Expected an object.")
    return body


def _as_json(job: Any, *, ints: bool) -> dict[str, Any]:
    return json_format.MessageToDict(job, use_integers_for_enums=ints)


def validate(job: dict[str, Any]) -> None:
    """Refuse (400) a CustomJob Vertex would refuse; `job` is its JSON with enum names."""

    def refuse(message: str) -> None:
        raise ApiError(400, message)

    if not job.get("displayName"):
        refuse("CustomJob.display_name is required")
    spec = job.get("jobSpec", {})
    pools = spec.get("workerPoolSpecs", [])
    if not pools:
        refuse("CustomJob.job_spec.worker_pool_specs needs at least one worker pool")
    if int(pools[0].get("replicaCount", 0)) != 1:
        refuse("worker_pool_specs[0] is the primary replica: its replica_count must be 1")
    for i, pool in enumerate(pools):
        machine = pool.get("machineSpec", {})
        machine_type, accelerator = machine.get("machineType", ""), machine.get("acceleratorType")
        if not machine_type:
            refuse(f"worker_pool_specs[{i}].machine_spec.machine_type is required")
        if bool(pool.get("containerSpec", {}).get("imageUri")) == bool(pool.get("pythonPackageSpec")):
            refuse(f"worker_pool_specs[{i}] needs exactly one of container_spec.image_uri and python_package_spec")
        if bool(accelerator) != bool(machine.get("acceleratorCount")):
            refuse(f"worker_pool_specs[{i}].machine_spec: accelerator_type and accelerator_count go together")
        if accelerator and not machine_type.startswith(_ACCELERATOR_MACHINES.get(accelerator, ("",))):
            refuse(f"machine type {machine_type} cannot take accelerator {accelerator}")
    labels = job.get("labels", {})
    bad = sorted(k for k, v in labels.items() if not _LABEL_KEY.match(k) or not _LABEL_VALUE.match(v))
    if bad or len(labels) > 64:
        refuse(
            f"invalid labels {bad}: at most 64, keys and values of lowercase letters, digits, '_' and '-', "
            "at most 63 characters, keys starting with a letter"
        )
    if spec.get("serviceAccount") and "@" not in spec["serviceAccount"]:
        refuse(f"service_account {spec['serviceAccount']!r} is not a service account email")


@dataclass
class Container:
    """A worker's container as a local process; every attempt runs the same argv in the same environment."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    attempts: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.log_path.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.attempts.append(process)
        return process

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the whole group, as a VM going away would
        process.wait()


class FakeJob:
    """One CustomJob: the resource Vertex shows, moved along by its container's process on a thread."""

    def __init__(self, resource: Any, container: Container, queued_seconds: float, provisioning_seconds: float) -> None:
        self.resource, self.container = resource, container
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._set("JOB_STATE_QUEUED")
        threading.Thread(target=self._lifecycle, args=(queued_seconds, provisioning_seconds), daemon=True).start()

    @property
    def state(self) -> str:
        return JobState(self.resource.state).name

    def as_json(self, *, ints: bool) -> dict[str, Any]:
        with self._lock:
            return _as_json(self.resource, ints=ints)

    def cancel(self) -> None:
        with self._lock:
            if self.state in _ENDED:
                raise ApiError(400, f"Cannot cancel {self.resource.name} in state {self.state}", "FAILED_PRECONDITION")
            self._set("JOB_STATE_CANCELLING")
            self._stop.set()
            if self._process is not None:
                Container.kill(self._process)

    def restart(self) -> None:
        """Kill the worker and start it again with the same environment (a preemption)."""
        with self._lock:
            if self._process is None or self.state != "JOB_STATE_RUNNING":
                raise RuntimeError(f"only a running job restarts; {self.resource.name} is {self.state}")
            Container.kill(self._process)
            self._process = self.container.start()

    def _lifecycle(self, queued_seconds: float, provisioning_seconds: float) -> None:
        if self._stop.wait(queued_seconds) or not self._advance("JOB_STATE_PENDING"):
            return self._end(*_CANCELLED)
        if self._stop.wait(provisioning_seconds):
            return self._end(*_CANCELLED)
        with self._lock:
            if self._stop.is_set():
                return self._end(*_CANCELLED)
            try:
                self._process = self.container.start()
            except OSError as exc:
                return self._end("JOB_STATE_FAILED", 3, f"The replica workerpool0-0 could not start: {exc}")
            self.resource.start_time.GetCurrentTime()
            self._set("JOB_STATE_RUNNING")
        while True:
            process = self._process
            code = process.wait()
            with self._lock:
                if process is not self._process:
                    continue  # restarted: follow the new attempt
                if self._stop.is_set():
                    return self._end(*_CANCELLED)
                if code == 0:
                    return self._end("JOB_STATE_SUCCEEDED")
                status = code if code > 0 else 128 - code  # killed by a signal: what a container reports
                return self._end(
                    "JOB_STATE_FAILED",
                    3,
                    f"The replica workerpool0-0 exited with a non-zero status of "
                    f"{status}. To find out more about why your job exited please check the logs: "
                    f"{self.container.log_path}",
                )

    def _advance(self, state: str) -> bool:
        """Move on to `state` unless the job was cancelled meanwhile."""
        with self._lock:
            if not self._stop.is_set():
                self._set(state)
            return not self._stop.is_set()

    def _set(self, state: str) -> None:
        with self._lock:
            self.resource.state = JobState[state]
            self.resource.update_time.GetCurrentTime()

    def _end(self, state: str, code: int = 0, message: str = "") -> None:
        with self._lock:
            if code:
                self.resource.error.code, self.resource.error.message = code, message
            self.resource.end_time.GetCurrentTime()
            self._set(state)


class FakeJobService:
    """The JobService's CustomJob methods, the requests it was asked, and test controls."""

    def __init__(
        self,
        workdir: Path,
        *,
        buckets: Mapping[str, Path] | None = None,
        programs: Mapping[str, str] | None = None,
        image_env: Mapping[str, str] | None = None,
        queued_seconds: float = 0.2,
        provisioning_seconds: float = 0.2,
    ) -> None:
        self.workdir, self.buckets = workdir, dict(buckets or {})
        self.programs = {"python": sys.executable, "python3": sys.executable, **(programs or {})}
        self.image_env = dict(image_env or {})
        self.delays = (queued_seconds, provisioning_seconds)
        self.endpoint = ""  # set when served
        self.requests: list[RecordedRequest] = []
        self.jobs: dict[str, FakeJob] = {}
        self._ids = itertools.count(1_000_000_000_000_000_001)
        self._failures: list[int] = []
        self._lock = threading.Lock()

    def fail_next(self, *codes: int) -> None:
        """Answer the next requests with these HTTP error codes (503: UNAVAILABLE, ...)."""
        with self._lock:
            self._failures.extend(codes)

    def created(self) -> list[dict[str, Any]]:
        """The CustomJob of every create request that made a job, as Vertex read it."""
        return [
            r.custom_job
            for r in self.requests
            if r.method == "POST" and r.path.endswith("/customJobs") and r.status == 200
        ]

    def restart(self, name: str) -> None:
        self.jobs[name].restart()

    def local_path(self, uri: str) -> Path:
        """The local folder behind an output URI: a mapped gs:// bucket, file:// or a plain path."""
        if uri.startswith("gs://"):
            bucket, _, rest = uri.removeprefix("gs://").partition("/")
            if bucket not in self.buckets:
                raise ApiError(400, f"bucket {bucket} is not accessible to the job", "FAILED_PRECONDITION")
            return self.buckets[bucket] / rest
        return Path(unquote(urlsplit(uri).path)) if uri.startswith("file://") else Path(uri)

    def handle(self, method: str, path: str, query: dict[str, str], raw: bytes) -> dict[str, Any]:
        """Answer one request (raising ApiError for an error answer) and record it with its status."""
        body, status = None, 200
        try:
            body = _json_body(raw)
            with self._lock:
                if self._failures:
                    raise ApiError(self._failures.pop(0), "injected failure")
            return self._dispatch(method, path, query, body)
        except ApiError as exc:
            status = exc.code
            raise
        finally:
            self.requests.append(RecordedRequest(method, path, query, body, status))

    def _dispatch(self, method: str, path: str, query: dict[str, str], body: Any) -> dict[str, Any]:
        ints = "enum-encoding=int" in query.get("$alt", "")
        if match := re.fullmatch(rf"/v1/({_PARENT})/customJobs", path):
            if method == "POST":
                return self._create(match[1], body).as_json(ints=ints)
            if method == "GET":
                return self._list(match[1], query, ints)
        if method == "GET" and (match := re.fullmatch(rf"/v1/({_JOB})", path)):
            return self._job(match[1]).as_json(ints=ints)
        if method == "POST" and (match := re.fullmatch(rf"/v1/({_JOB}):cancel", path)):
            self._job(match[1]).cancel()
            return {}
        raise ApiError(404, f"no method {method} {path}")

    def close(self) -> None:
        for job in list(self.jobs.values()):
            with contextlib.suppress(ApiError):
                job.cancel()

    def _job(self, name: str) -> FakeJob:
        if name not in self.jobs:
            raise ApiError(404, f"CustomJob {name} not found")
        return self.jobs[name]

    def _create(self, parent: str, body: dict[str, Any] | None) -> FakeJob:
        resource = _parse_custom_job(body)
        validate(_as_json(resource, ints=False))
        job_id = str(next(self._ids))
        resource.name = f"{parent}/customJobs/{job_id}"
        resource.create_time.GetCurrentTime()
        job = FakeJob(resource, self._container(resource, job_id), *self.delays)
        with self._lock:
            self.jobs[resource.name] = job
        return job

    def _container(self, resource: Any, job_id: str) -> Container:
        spec = resource.job_spec.worker_pool_specs[0].container_spec
        if not spec.command:
            raise ApiError(400, "this fake runs containers by their command; the image's own entrypoint is unknown")
        env = {k: os.environ[k] for k in _HOST_ENV if k in os.environ} | self.image_env
        env |= {var.name: var.value for var in spec.env}
        if prefix := resource.job_spec.base_output_directory.output_uri_prefix:
            base = str(self.local_path(prefix)).rstrip("/")
            env |= {
                "AIP_MODEL_DIR": f"{base}/model/",
                "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/",
                "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs/",
            }
        env["CLOUD_ML_JOB_ID"] = job_id
        argv = [self.programs.get(spec.command[0], spec.command[0]), *spec.command[1:], *spec.args]
        return Container(argv, env, self.workdir / job_id / "container.log")

    def _list(self, parent: str, query: dict[str, str], ints: bool) -> dict[str, Any]:
        matches = _matcher(query.get("filter", ""))
        with self._lock:
            jobs = [job for name, job in self.jobs.items() if name.startswith(f"{parent}/") and matches(job)]
        # The API promises no order: oldest first here, so a client relying on one is caught.
        start, size = int(query.get("pageToken") or 0), int(query.get("pageSize") or 0) or len(jobs)
        page: dict[str, Any] = {}
        if jobs[start : start + size]:
            page["customJobs"] = [job.as_json(ints=ints) for job in jobs[start : start + size]]
        if start + size < len(jobs):
            page["nextPageToken"] = str(start + size)
        return page


_CLAUSE = re.compile(r'(labels\.[a-z][a-z0-9_-]*|display_name|displayName|state)\s*=\s*("[^"]*"|[^\s"]+)')


def _matcher(text: str) -> Callable[[FakeJob], bool]:
    """The list filter, for the clauses the fake knows (`labels.k=v`, `display_name=`, `state=`, AND)."""
    clauses = []
    for clause in filter(None, re.split(r"\s+AND\s+", text.strip())):
        if not (match := _CLAUSE.fullmatch(clause.strip())):
            raise ApiError(400, f"unsupported list filter {clause!r}")
        clauses.append((match[1], match[2].strip('"')))

    def value(job: FakeJob, name: str) -> str:
        if name.startswith("labels."):
            return job.resource.labels.get(name.removeprefix("labels."), "\0")
        return job.state if name == "state" else job.resource.display_name

    return lambda job: all(value(job, name) == wanted for name, wanted in clauses)


@contextmanager
def fake_vertex(workdir: Path, **options: Any) -> Iterator[FakeJobService]:
    """Serve a FakeJobService on a loopback port; `service.endpoint` is its http:// URL."""
    from tests.support import http_server

    service = FakeJobService(workdir, **options)
    try:
        with http_server(type("VertexHandler", (JsonApiHandler,), {"api": service})) as service.endpoint:
            yield service
    finally:
        service.close()
