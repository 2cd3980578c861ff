"""Runs the whole system in one process: six services on loopback ports, the durable bus
(its dispatcher, and a publish endpoint for processes outside the stack such as trainers),
the bucket watcher, the scheduler and the reconcile timer.

Services share one `Dependencies` (one ledger engine). `endpoints.json` in the home
folder tells clients where everything is; it is removed on a clean stop.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import uvicorn

from .. import bootstrap, logs, states
from ..atomic import write_atomically
from ..deps import Dependencies
from ..ledger import runs
from ..listening import bind_loopback
from ..reconciling import ReconcileStep, run_due, shortest_interval
from ..settings import Settings
from ..topology import DEPLOYER, SERVICES
from .dispatcher import Dispatcher
from .publisher import create_publisher_app
from .scheduler import Scheduler
from .watcher import BucketWatcher

log = logging.getLogger(__name__)
SERVICE_MODULES = {name: name.replace("-", "_") + ".app" for name in SERVICES}


def _server(app: Any) -> uvicorn.Server:
    # uvicorn's own INFO lines ("Started server process", ...) repeat once per service and name none;
    # the stack logs one line with every endpoint instead. Its warnings and errors still show.
    return uvicorn.Server(
        uvicorn.Config(
            app, log_config=None, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5
        )
    )


class HomeInUse(RuntimeError):
    """Another embedded stack runs on this home."""


class HomeLock:
    """One embedded stack per home: an exclusive lock on `<home>/stack.lock`, held while the stack runs
    (the kernel drops it when the process dies, so a killed stack never leaves the home locked)."""

    def __init__(self, home: Path) -> None:
        self.path = home / "stack.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise HomeInUse(
                f"an embedded stack already runs on {self.path.parent} (pid {holder}); stop it first, "
                "or give this one another home (--home)"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the lock
            self._file = None


class EmbeddedStack:
    def __init__(
        self, settings: Settings, *, port_base: int | None = None, services: tuple[str, ...] = SERVICES
    ) -> None:
        self.settings = settings
        # First: a second stack on this home is refused before it binds a port or touches a file
        # (stopping the first one would otherwise delete the second's endpoints.json).
        self._home_lock = HomeLock(settings.home)
        self._home_lock.acquire()
        self.services = [s for s in SERVICES if s in services]
        # The services' ports, then the bus endpoint's (consecutive from port_base when given).
        self._sockets = [
            bind_loopback(settings.host, port_base + i if port_base else 0) for i in range(len(self.services) + 1)
        ]
        netloc = f"[{settings.host}]" if ":" in settings.host else settings.host  # an IPv6 address in a URL
        urls = [f"http://{netloc}:{sock.getsockname()[1]}/" for sock in self._sockets]
        self.urls, self.bus_url = dict(zip(self.services, urls, strict=False)), urls[-1]
        self.settings.service_urls = dict(self.urls)
        self.settings.bus_url = self.bus_url
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._servers: list[uvicorn.Server] = []  # in the order of self._sockets
        self._loop_thread: threading.Thread | None = None
        self.deps: Dependencies | None = None
        self.dispatcher: Dispatcher | None = None
        self.serving_urls: dict[str, str] = {}  # pipeline -> its router's URL

    @property
    def dependencies(self) -> Dependencies:
        """What the stack's services share; built by `start`."""
        if self.deps is None:
            raise RuntimeError("the embedded stack has not started")
        return self.deps

    @property
    def log_file(self) -> Path:
        """Where the stack's services log (JSON lines); trainer jobs log in their job folders."""
        return self.settings.home / "logs" / "ctflow.log"

    @property
    def endpoints_file(self) -> Path:
        return self.settings.home / "endpoints.json"

    def endpoints(self) -> dict[str, Any]:
        return {
            **{name.replace("-", "_"): url for name, url in self.urls.items()},
            "bus": self.bus_url,
            "mlflow": self.settings.tracking_uri,
            "bucket": str(self.settings.bucket_dir),
            "serving": dict(self.serving_urls),
        }

    def start(self) -> None:
        logs.configure("ctflow-embedded", log_file=self.log_file)  # the terminal is a person's: no log lines
        wake = threading.Event()
        self.deps = deps = bootstrap.build(self.settings, on_publish=wake.set)
        self._prepare_pipelines(deps)
        self._open_serving(deps)
        self.dispatcher = Dispatcher(deps.ledger, self.settings, self.urls, wake)
        reconcilers: list[ReconcileStep] = []
        for name in self.services:
            module = importlib.import_module(SERVICE_MODULES[name])
            app = module.create_app(deps_factory=lambda: deps)
            reconcilers.extend(r for r in module.RECONCILERS if r not in reconcilers)
            self._servers.append(_server(app))
        self._servers.append(_server(create_publisher_app(deps.bus, self.settings.max_request_bytes)))
        self._loop_thread = threading.Thread(target=self._serve_all, name="uvicorn", daemon=True)
        self._loop_thread.start()
        watcher = BucketWatcher(
            self.settings.bucket_dir, "local-bucket", deps.bus, self.settings.watch_interval_seconds
        )
        self._spawn(self.dispatcher.run, "bus-dispatcher")
        self._spawn(watcher.run, "bucket-watcher")
        self._spawn(Scheduler(deps.pipelines, deps.bus).run, "scheduler")
        self._spawn(lambda stop: self._reconcile_loop(stop, reconcilers), "reconcile")
        self._wait_healthy()
        # atomic: `ctflow` commands and scripts poll for this file and read it as soon as it exists
        write_atomically(self.endpoints_file, json.dumps(self.endpoints(), indent=2).encode())
        log.info("embedded stack up", extra=logs.fields(endpoints=self.endpoints()))

    @staticmethod
    def _prepare_pipelines(deps: Dependencies) -> None:
        """Create MLflow's SQLite store and each pipeline's experiment once, before any trainer
        process or handler opens them (two processes migrating a new store at once collide),
        and publish the holdout sets that ship with ctflow into the bucket."""
        from ..sample_data import BUNDLED_HOLDOUTS

        for name, spec in deps.pipelines.all().items():
            deps.registry.ensure_experiment(name)
            if name in BUNDLED_HOLDOUTS:
                BUNDLED_HOLDOUTS[name](spec, deps.blobs)

    def _open_serving(self, deps: Dependencies) -> None:
        """Each pipeline's router on its stable URL, with the revisions that served before a restart."""
        if DEPLOYER not in self.services:
            return
        specs = deps.pipelines.all()
        routers = deps.serving.open(sorted({spec.serving.service for spec in specs.values()}))
        self.serving_urls = {name: routers[spec.serving.service] for name, spec in specs.items()}

    def _spawn(self, target: Callable[[threading.Event], None], name: str) -> None:
        thread = threading.Thread(target=target, args=(self.stop_event,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _serve_all(self) -> None:
        async def main() -> None:
            await asyncio.gather(
                *(server.serve(sockets=[sock]) for sock, server in zip(self._sockets, self._servers, strict=True))
            )

        asyncio.run(main())

    def _wait_healthy(self, timeout: float = 30.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while not all(s.started for s in self._servers):
            if time.monotonic() > deadline or not (self._loop_thread and self._loop_thread.is_alive()):
                raise RuntimeError("embedded services did not start")
            time.sleep(0.02)

    def _reconcile_loop(self, stop: threading.Event, steps: list[ReconcileStep]) -> None:
        """Tick as Cloud Scheduler would, as often as the most eager step asks; each step runs when due."""
        deps = self.dependencies
        tick = min(self.settings.reconcile_interval_seconds, shortest_interval(steps, self.settings) or math.inf)
        while not stop.wait(tick):
            run_due(deps, steps)

    def runs_still_training(self) -> list[str]:
        """Runs whose trainer process is (or may be) running: it goes on after the stack stops,
        as a Vertex AI job would, and the next `ctflow up` on this home records how it ended."""
        if self.deps is None:
            return []
        with self.deps.ledger.reading() as tx:
            return [run.id for run in runs.listing(tx, state=states.TRAINING, limit=1000)]

    def stop(self) -> None:
        self.stop_event.set()
        for server in self._servers:
            server.should_exit = True
        if self._loop_thread:
            self._loop_thread.join(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)
        for sock in self._sockets:
            sock.close()
        if self.deps is not None and self.deps.built("serving"):  # stop its routers and revisions
            self.deps.serving.close()
        self.endpoints_file.unlink(missing_ok=True)  # ours: no other stack runs on this home
        if self.deps:
            self.deps.ledger.dispose()
        self._home_lock.release()

    def __enter__(self) -> EmbeddedStack:
        try:
            self.start()
        except BaseException:
            self.stop()  # what did start is stopped, the sockets closed and the home lock released
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
