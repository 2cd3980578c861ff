"""A load generator for the event benchmarks: raw HTTP/1.1 keep-alive, in a process of its own.

The service and its load share this machine's two cores, so the client must cost far
less than the server or it measures itself: httpx's AsyncClient spends ~1.5 ms of CPU
per request, which alone caps a bare FastAPI app at ~670 requests/s. This client
writes pre-encoded requests on `concurrency` persistent connections and reads each
answer (status line, headers, Content-Length body) before sending the next, as a
Pub/Sub push subscription with that many outstanding messages would. It runs in a
separate process so its work never holds the server's GIL, and reports its own CPU
time so a reader can check it was not the bottleneck.

Run as `python -m tests.bench.load_client`: a pickled `(url, requests, concurrency)`
on stdin, one JSON result on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import sys
import time
from urllib.parse import urlsplit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def encode(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return int(status_line.split(" ", 2)[1]), await reader.readexactly(length)


async def _load(url: str, requests: list[tuple[dict[str, str], bytes]], concurrency: int) -> dict:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    wire = [encode(host, port, path, headers, body) for headers, body in requests]
    latencies: list[float] = []
    failures: list[str] = []
    next_index = iter(range(len(wire)))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in next_index:
                t0 = time.perf_counter()
                writer.write(wire[i])
                status, body = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    failures.append(f"HTTP {status}: {body[:200]!r}")
        finally:
            writer.close()

    cpu0 = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "elapsed": elapsed,
        "latencies": latencies,
        "failures": failures,
        "client_cpu_s": time.process_time() - cpu0,
    }


def run_load(url: str, requests: list[tuple[dict[str, str], bytes]], concurrency: int) -> dict:
    """Send `requests` from a separate process; {elapsed, latencies, failures, client_cpu_s}."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.load_client"],
        cwd=REPO,
        check=True,
        input=pickle.dumps((url, requests, concurrency)),
        capture_output=True,
    )
    return json.loads(proc.stdout)


if __name__ == "__main__":
    url, requests, concurrency = pickle.loads(sys.stdin.buffer.read())
    print(json.dumps(asyncio.run(_load(url, requests, concurrency))))
