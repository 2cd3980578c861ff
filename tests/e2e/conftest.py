"""The embedded stack as a user runs it: `ctflow up` in a subprocess, driven through the CLI and HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import stop_servers, stop_trainers, wait_for

RECONCILE_INTERVAL_SECONDS = 1.0


def ctflow(home: Path, *args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(
        [sys.executable, "-m", "ctflow.cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Path, str, subprocess.Popen]]:  # type: ignore[type-arg]
    """`ctflow up` in a temp home; yields (home, status API URL, process). Trainers die with the test."""
    home = tmp_path / "home"
    env = {**os.environ, "CTFLOW_RECONCILE_INTERVAL_SECONDS": str(RECONCILE_INTERVAL_SECONDS)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctflow.cli", "up", "--home", str(home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    endpoints = home / "endpoints.json"
    try:
        wait_for(lambda: endpoints.exists() or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        api = json.loads(endpoints.read_text())["status_api"].rstrip("/")
        yield home, api, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stop_trainers(home)
        stop_servers(home)
