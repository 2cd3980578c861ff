"""Embedded serving: one TorchServe process per revision, behind one weighted router per serving service.

Layout under `<home>/serving/<service>/`:

- `router.json`: the router's port, kept so the service's URL stays the same across restarts;
- `traffic.json`: the split last asked for (restored at start);
- `revisions/<revision>/server.json`: the revision (archive and sha256) and its process (pid,
  start time, port); `.../work/`: TorchServe's config, model store and logs.

Revision processes are started through ctflow.supervisor (own session, reaped when they
end). A stack that restarts adopts a revision process that is still the one it started
(pid and kernel start time) and still answers, and restarts one that is not. A watchdog
checks every revision each second: readiness is a prediction the model answers, and a
dead process is restarted (a revision is immutable, so a restart is the same revision).
A clean stop of the stack stops them all; a killed stack leaves them to be adopted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from ..atomic import write_atomically
from ..listening import bind_loopback, free_loopback_port
from ..supervisor import SUPERVISOR, is_alive, labelled_process, signal_group, start_ticks
from . import Revision, RevisionFigures, ServingError
from .router import Router

if TYPE_CHECKING:
    import uvicorn

    from ..blobstore import BlobStore
    from ..settings import Settings

log = logging.getLogger(__name__)
MAX_ARCHIVE_BYTES = 4 * 1024**3
LABEL = "CTFLOW_SERVING_REVISION"  # in each revision process's environment: <home>/<service>/<revision>


@dataclass
class _Process:
    revision: Revision
    port: int
    pid: int
    ticks: int | None
    ready: bool = False
    restarts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class _Service:
    name: str
    router: Router
    url: str
    socket: socket.socket
    server: uvicorn.Server
    thread: threading.Thread
    processes: dict[str, _Process] = field(default_factory=dict)


class EmbeddedServing:
    metrics_delay_seconds = 0.0  # the router counts every answer as it happens

    def __init__(self, settings: Settings, blobs: BlobStore) -> None:
        self.settings = settings
        self.blobs = blobs
        self.root = settings.home / "serving"
        self._services: dict[str, _Service] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    # ---- the stack's side: open every service's router, restore what served, stop ----------

    def open(self, services: list[str]) -> dict[str, str]:
        """Start each service's router (on the port it had before) and restore its revisions and split."""
        for name in services:
            self._service(name)
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="serving-watchdog", daemon=True)
            self._watchdog.start()
        return {name: svc.url for name, svc in self._services.items()}

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            services = list(self._services.values())
            self._services.clear()
        for svc in services:
            svc.server.should_exit = True
            svc.thread.join(timeout=10)
            svc.socket.close()
            for process in svc.processes.values():
                self._kill(process)

    # ---- the port ----------------------------------------------------------------------------

    def url(self, service: str) -> str | None:
        return self._service(service).url

    def prediction_url(self, service: str, pipeline: str, revision: str | None = None) -> str:
        base = self._service(service).url.rstrip("/")
        tag = f"/revisions/{revision}" if revision else ""
        return f"{base}{tag}/v1/models/{pipeline}:predict"

    def create_revision(self, service: str, revision: Revision) -> None:
        svc = self._service(service)
        with self._lock:
            if revision.name in svc.processes:
                return
            folder = self._revision_dir(service, revision.name)
            process = self._adopt(folder, revision) or self._launch(service, folder, revision)
            svc.processes[revision.name] = process
            svc.router.add(revision.name, process.base_url)
            svc.router.set_ready(revision.name, process.ready)  # an adopted revision that answers serves at once

    def ready(self, service: str, revision: str) -> bool:
        svc = self._service(service)
        process = svc.processes.get(revision)
        if process is None:
            return False
        if not process.ready:
            self._check(svc, process)
        return process.ready

    def set_traffic(self, service: str, weights: dict[str, int]) -> None:
        if weights and sum(weights.values()) != 100 or any(p < 0 for p in weights.values()):
            raise ServingError(f"a traffic split must give 0-100% each and 100% in all, not {weights}")
        svc = self._service(service)
        unknown = [rev for rev, pct in weights.items() if pct and rev not in svc.processes]
        if unknown:
            raise ServingError(f"no revision {', '.join(unknown)} in service {service}")
        write_atomically(self.root / service / "traffic.json", json.dumps(weights, indent=2).encode())
        svc.router.set_weights(weights)

    def traffic(self, service: str) -> dict[str, int]:
        return self._service(service).router.weights()

    def figures(self, service: str, revision: str, since: float, until: float) -> RevisionFigures:
        return self._service(service).router.figures(revision, since, until)

    def stop_revision(self, service: str, revision: str) -> None:
        svc = self._service(service)
        if svc.router.weights().get(revision):
            raise ServingError(f"revision {revision} still has traffic; move it away first")
        with self._lock:
            svc.router.remove(revision)
            process = svc.processes.pop(revision, None)
        if process is not None:
            self._kill(process)
        elif (pid := labelled_process(LABEL, self._label(service, revision))) is not None:
            # A process no record names (a crash between its start and writing server.json): found by its label.
            signal_group(pid, signal.SIGKILL)
        shutil.rmtree(self._revision_dir(service, revision), ignore_errors=True)

    # ---- internals -------------------------------------------------------------------------

    def _service(self, name: str) -> _Service:
        with self._lock:
            svc = self._services.get(name)
            if svc is None:
                svc = self._services[name] = self._start_router(name)
                self._restore(svc)
            return svc

    def _start_router(self, name: str) -> _Service:
        import asyncio

        import uvicorn

        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        sock = None
        with contextlib.suppress(OSError, ValueError, KeyError):  # the port it had, if it is free
            sock = bind_loopback(self.settings.host, json.loads((folder / "router.json").read_text())["port"])
        sock = sock or bind_loopback(self.settings.host, 0)
        port = sock.getsockname()[1]
        write_atomically(folder / "router.json", json.dumps({"port": port}).encode())
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        router = Router(max_body_bytes=self.settings.max_prediction_bytes)
        config = uvicorn.Config(router, log_config=None, log_level="warning", access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name=f"router-{name}", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return _Service(name, router, f"http://{host}:{port}/", sock, server, thread)

    def _restore(self, svc: _Service) -> None:
        revisions = self.root / svc.name / "revisions"
        for server_file in sorted(revisions.glob("*/server.json")) if revisions.is_dir() else []:
            try:
                revision = Revision.from_json(json.loads(server_file.read_text())["revision"])
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("ignoring an unreadable revision record %s", server_file)
                continue
            process = self._adopt(server_file.parent, revision) or self._launch(svc.name, server_file.parent, revision)
            svc.processes[revision.name] = process
            svc.router.add(revision.name, process.base_url)
            svc.router.set_ready(revision.name, process.ready)  # an adopted revision that answers serves at once
        with contextlib.suppress(OSError, ValueError):
            weights = json.loads((self.root / svc.name / "traffic.json").read_text())
            svc.router.set_weights({rev: int(pct) for rev, pct in weights.items() if rev in svc.processes})

    def _adopt(self, folder: Path, revision: Revision) -> _Process | None:
        """The revision's process from an earlier stack, when it is still that process and still answers."""
        try:
            record = json.loads((folder / "server.json").read_text())
        except (OSError, ValueError):
            return None
        if record.get("revision") != revision.to_json() or not is_alive(record["pid"], record.get("ticks")):
            return None
        process = _Process(revision, record["port"], record["pid"], record.get("ticks"))
        process.ready = self._answers(process)
        if not process.ready and time.time() - record.get("started_at", 0) > 120:
            self._kill(process)  # alive but not answering long after its start: start it again
            return None
        log.info("adopted revision %s (pid %s)", revision.name, process.pid)
        return process

    def _launch(self, service: str, folder: Path, revision: Revision, restarts: int = 0) -> _Process:
        folder.mkdir(parents=True, exist_ok=True)
        archive = folder / "model.mar"
        if not archive.exists():
            data = self.blobs.read_bytes(revision.archive_uri, max_bytes=MAX_ARCHIVE_BYTES)
            write_atomically(archive, data)
        work = folder / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        port = free_loopback_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CTFLOW_")},
            "PORT": str(port),
            "CTFLOW_SERVE_HOST": "127.0.0.1",
            "CTFLOW_SERVE_DIR": str(work),
            "CTFLOW_ARCHIVE": str(archive),
            "CTFLOW_ARCHIVE_SHA256": revision.archive_sha256,
            "CTFLOW_MODEL_NAME": revision.pipeline,
            "CTFLOW_REVISION": revision.name,
            LABEL: self._label(service, revision.name),
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        }
        with (work / "server.out").open("ab") as out:
            pid = SUPERVISOR.start(
                [sys.executable, "-m", "model_server.serve"], cwd=work, env=env, stdout=out, stderr=out
            )
        process = _Process(revision, port, pid, start_ticks(pid), restarts=restarts)
        record = {"revision": revision.to_json(), "pid": pid, "ticks": process.ticks, "port": port}
        write_atomically(folder / "server.json", json.dumps({**record, "started_at": time.time()}).encode())
        log.info("started revision %s (pid %s, port %s)", revision.name, pid, port)
        return process

    def _label(self, service: str, revision: str) -> str:
        return f"{self.settings.home}/{service}/{revision}"

    def _revision_dir(self, service: str, revision: str) -> Path:
        return self.root / service / "revisions" / revision

    def _answers(self, process: _Process) -> bool:
        """Readiness: the model answers (GET on its prediction path reaches the handler only once it loaded)."""
        try:
            answer = httpx.get(f"{process.base_url}/predictions/{process.revision.pipeline}", timeout=2)
            return answer.status_code == 200 and answer.json().get("ready") is True
        except (httpx.HTTPError, ValueError):
            return False

    def _check(self, svc: _Service, process: _Process) -> None:
        alive = SUPERVISOR.exit_status(process.pid)[1] is None and is_alive(process.pid, process.ticks)
        if not alive:
            process.ready = False
            svc.router.set_ready(process.revision.name, False)
            if process.restarts < 5:
                log.warning("revision %s ended; starting it again", process.revision.name)
                folder = self._revision_dir(svc.name, process.revision.name)
                with self._lock:
                    if svc.processes.get(process.revision.name) is process:
                        fresh = self._launch(svc.name, folder, process.revision, process.restarts + 1)
                        svc.processes[process.revision.name] = fresh
                        svc.router.add(process.revision.name, fresh.base_url)
            return
        if process.ready:  # a model that answered stays ready while its process lives
            return
        ready = self._answers(process)
        if ready != process.ready:
            process.ready = ready
            svc.router.set_ready(process.revision.name, ready)

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                pairs = [(svc, p) for svc in self._services.values() for p in list(svc.processes.values())]
            for svc, process in pairs:
                try:
                    self._check(svc, process)
                except Exception:
                    log.exception("checking revision %s failed", process.revision.name)

    def _kill(self, process: _Process) -> None:
        if is_alive(process.pid, process.ticks):
            signal_group(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while is_alive(process.pid, process.ticks) and time.monotonic() < deadline:
                time.sleep(0.05)
            signal_group(process.pid, signal.SIGKILL)
