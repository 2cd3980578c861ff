"""Helpers the tests share: real servers on loopback, component checks that fail under CI."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from ctflow.embedded.watcher import finalized_event
from ctflow.events import to_http_binary

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO_ROOT = Path(__file__).resolve().parents[1]


def missing(component: str, why: str) -> None:
    """Skip locally, but fail under CI=true: CI must never skip an integration test."""
    message = f"{component} is not available: {why}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a loopback port in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def gcs_event_request(
    bucket_root: Path,
    name: str,
    bucket: str = "local-bucket",
    *,
    event_id: str | None = None,
    generation: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """The binary-mode CloudEvent Eventarc delivers for an object in a local bucket folder."""
    event = finalized_event(bucket, name, (bucket_root / name).stat())
    if generation is not None:
        event = replace(event, data={**event.data, "generation": generation})
    if event_id is not None:
        event = replace(event, id=event_id)
    return to_http_binary(event)


def push_request(
    message: dict[str, Any] | bytes,
    message_id: str,
    attributes: dict[str, str] | None = None,
    subscription: str = "projects/test/subscriptions/hparams",
) -> tuple[dict[str, str], bytes]:
    """A Pub/Sub push envelope carrying a (hyperparameter) message."""
    data = message if isinstance(message, bytes) else json.dumps(message).encode()
    body = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes or {},
            "messageId": message_id,
            "publishTime": "2026-11-22T00:00:00Z",
        },
        "subscription": subscription,
    }
    return {"content-type": "application/json"}, json.dumps(body).encode()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


class RecordingHandler(BaseHTTPRequestHandler):
    """Records each POST (lower-cased headers, body) and answers with the next queued status."""

    requests: list[tuple[dict[str, str], bytes]] = []
    responses: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(type(self).responses.pop(0) if type(self).responses else 200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threading http.server with `handler` on a loopback port; yields its base URL (no trailing /)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def recording_server(responses: list[int], path: str = "/") -> Iterator[tuple[str, type[RecordingHandler]]]:
    """A loopback HTTP server that records POSTs; yields (url, handler class holding `requests`)."""
    handler = type("Recorder", (RecordingHandler,), {"requests": [], "responses": list(responses)})
    with http_server(handler) as base:
        yield f"{base}{path}", handler


def trainer_pids(home: Path) -> dict[str, int]:
    """Embedded trainer processes by job folder (`<home>/jobs/<run>/<attempt>/job.json`)."""
    found = {}
    for record in home.glob("jobs/*/*/job.json"):
        pid = json.loads(record.read_text()).get("pid")
        if pid:
            found[str(record.parent)] = int(pid)
    return found


def stop_trainers(home: Path) -> None:
    """Kill what embedded trainers a test left running (they outlive the stack, as Vertex jobs do)."""
    import signal

    for pid in trainer_pids(home).values():
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def stop_servers(home: Path) -> None:
    """Kill the TorchServe revisions a killed stack left running (they outlive it, to be adopted)."""
    import signal

    for record in home.glob("serving/*/revisions/*/server.json"):
        with suppress(ProcessLookupError, PermissionError, ValueError, KeyError):
            os.killpg(int(json.loads(record.read_text())["pid"]), signal.SIGKILL)


def start_service(
    module: str, env: dict[str, str], port: int | None = None, timeout: float = 60
) -> tuple[subprocess.Popen, float, int]:  # type: ignore[type-arg]
    """`uvicorn module` in its own process as its container runs it; (process, seconds to first 200 on
    /healthz, port). Fails at once, with the process's stderr, if it exits before answering."""
    port = port or free_port()
    started = time.perf_counter()
    errors = tempfile.TemporaryFile()  # noqa: SIM115 - outlives this call; a pipe could fill and block the service
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            module,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )
    with httpx.Client() as client:
        while time.perf_counter() - started < timeout:
            try:
                if client.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    return proc, time.perf_counter() - started, port
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.005)
    proc.kill()
    proc.wait()
    errors.seek(0)
    raise RuntimeError(
        f"{module} did not start (exit {proc.returncode}): {errors.read().decode(errors='replace')[-2000:]}"
    )


def stop(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def replaying(deps: Any, letter_id: str) -> Iterator[None]:
    """Hold a dead letter's replay lease as the status API does while it resends the letter (a service
    honours the ctflow-replay-of marker only then)."""
    from datetime import timedelta

    from ctflow.ledger import dead_letters, leases

    with deps.ledger.transaction() as tx:
        lease = leases.claim(tx, dead_letters.replay_lease(letter_id), duration=timedelta(minutes=2))
    assert lease is not None, f"dead letter {letter_id} is being replayed already"
    try:
        yield
    finally:
        with deps.ledger.transaction() as tx:
            leases.forget(tx, lease.name)
