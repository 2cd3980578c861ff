"""Shared by the benchmarks: start a service process and wait for its first healthy answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(module: str, env: dict[str, str], port: int | None = None) -> tuple[subprocess.Popen, float, int]:  # type: ignore[type-arg]
    """(process, seconds from spawn to first 200 on /healthz, port)."""
    port = port or free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", module, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--no-access-log"],
        env={**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}", **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    with httpx.Client() as client:
        while True:
            try:
                if client.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    return proc, time.perf_counter() - started, port
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"{module} exited with {proc.returncode}")
            time.sleep(0.005)


def stop(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
