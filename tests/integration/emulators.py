"""Start the Google emulators the integration tests run against (Pub/Sub via gcloud, GCS in-process)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.support import free_port, missing


@contextmanager
def pubsub_emulator(project: str) -> Iterator[str]:
    """The gcloud Pub/Sub emulator on a free loopback port; yields host:port."""
    if shutil.which("gcloud") is None:
        missing("the Pub/Sub emulator", "gcloud is not on PATH (run scripts/ensure-test-services.sh)")
    host = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port={host}", f"--project={project}", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://{host}/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                missing("the Pub/Sub emulator", f"it did not start: {output[-2000:]}")
            time.sleep(0.25)
        yield host
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def gcs_emulator(bucket: str) -> Iterator[str]:
    """gcp-storage-emulator, in memory, on a free loopback port; yields its base URL."""
    try:
        from gcp_storage_emulator.server import create_server
    except ImportError as exc:
        missing("the GCS emulator", str(exc))
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
