"""hparam-consumer throughput and latency with dedup on, on SQLite and on PostgreSQL.

One service process (uvicorn, as deployed); a load generator on the same machine
sends unique Pub/Sub push messages with fixed concurrency, then replays a share of
them as duplicates. Goal: >= 1,000 events/s, p99 < 50 ms.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from ctflow import bootstrap
from ctflow.dataset_drop import drop_folder
from ctflow.sample_data import write_digits_dataset
from ctflow.settings import Settings
from tests.bench.common import start_service, stop
from tests.support import gcs_event_request, push_request

CONCURRENCY = 16


def seed(settings: Settings) -> None:
    """A dataset version must have arrived before hyperparameter messages can be accepted."""
    from fastapi.testclient import TestClient

    from dataset_listener.app import create_app

    deps = bootstrap.build(settings)
    folder = write_digits_dataset(Path(tempfile.mkdtemp()) / "digits")
    drop_folder(folder, deps.pipelines.get("digits"), deps.blobs, "bench")
    app = create_app()
    app.state.deps = deps
    with TestClient(app) as client:
        headers, body = gcs_event_request(settings.bucket_dir, "datasets/digits/bench/_MANIFEST.json")
        assert client.post("/", content=body, headers=headers).json()["status"] == "processed"
    deps.ledger.dispose()


async def load(url: str, requests: list[tuple[dict, bytes]]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue: asyncio.Queue = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            headers, body = queue.get_nowait()
            t0 = time.perf_counter()
            response = await client.post(url, content=body, headers=headers)
            latencies.append(time.perf_counter() - t0)
            assert response.status_code == 200, response.text

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
        return time.perf_counter() - started, latencies


def run(backend: str, database_url: str, events: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="ctflow-bench-"))
    settings = Settings(home=home, database_url=database_url)
    seed(settings)
    proc, _, port = start_service("hparam_consumer.app:app", {"CTFLOW_HOME": str(home), "CTFLOW_DATABASE_URL": database_url,
                                                              "CTFLOW_LOG_LEVEL": "WARNING"})
    try:
        url = f"http://127.0.0.1:{port}/"
        warmup = [push_request({"pipeline": "digits"}, f"warm-{i}") for i in range(200)]
        asyncio.run(load(url, warmup))
        unique = [push_request({"pipeline": "digits", "hyperparameters": {"lr": 0.01}}, f"m-{uuid.uuid4().hex}")
                  for _ in range(events)]
        duplicates = unique[: events // 5]
        elapsed, latencies = asyncio.run(load(url, unique + duplicates))
    finally:
        stop(proc)
    latencies.sort()
    n = len(latencies)
    result = {"benchmark": "hparam_consumer_events", "ledger": backend, "events": n,
              "events_per_s": round(n / elapsed), "p50_ms": round(statistics.median(latencies) * 1000, 2),
              "p99_ms": round(latencies[int(n * 0.99) - 1] * 1000, 2), "concurrency": CONCURRENCY,
              "goal": ">= 1000 events/s, p99 < 50 ms"}
    result["ratio_to_goal"] = round(result["events_per_s"] / 1000, 2)
    print(json.dumps(result), flush=True)
    return result


def main(events: int = 3000) -> list[dict]:
    import psycopg

    name = f"ctflow_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        return [run("sqlite", f"sqlite:///{tempfile.mkdtemp()}/ledger.db", events),
                run("postgresql", f"postgresql://postgres@127.0.0.1:5432/{name}", events)]
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
