"""hparam-consumer throughput and latency with dedup on, on SQLite and on PostgreSQL.

One service process (uvicorn, as deployed); a load generator in a separate process
(tests/bench/load_client.py: raw HTTP/1.1 keep-alive, so it costs the shared two cores
little) sends unique Pub/Sub push messages with fixed concurrency, then replays a
share of them as duplicates. Every event commits before its 2xx. Goal: >= 1,000
events/s, p99 < 50 ms.

Next to it, the same client drives a bare FastAPI app doing only the HTTP part of the
work (bare_events_app.py): the ceiling of any service process here. Each line reports
the server's and the client's CPU per event, so a reader can tell where time went.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: `python tests/bench/...`

from ctflow import bootstrap  # noqa: E402
from ctflow.dataset_drop import drop_folder  # noqa: E402
from ctflow.sample_data import write_digits_dataset  # noqa: E402
from ctflow.settings import Settings  # noqa: E402
from tests.bench.load_client import run_load  # noqa: E402
from tests.support import gcs_event_request, push_request, start_service, stop  # noqa: E402

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


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(name: str, proc, port: int, requests: list[tuple[dict, bytes]], **extra) -> dict:  # type: ignore[no-untyped-def]
    """Drive one running service with `requests`; one JSON line of figures."""
    url = f"http://127.0.0.1:{port}/"
    run_load(url, [push_request({"pipeline": "digits"}, f"warm-{uuid.uuid4().hex}") for _ in range(200)], CONCURRENCY)
    cpu_before = process_cpu_seconds(proc.pid)
    load = run_load(url, requests, CONCURRENCY)
    server_cpu = process_cpu_seconds(proc.pid) - cpu_before
    assert not load["failures"], load["failures"][:3]
    latencies = sorted(load["latencies"])
    n = len(latencies)
    result = {
        "benchmark": name,
        **extra,
        "events": n,
        "events_per_s": round(n / load["elapsed"]),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(n * 0.99) - 1] * 1000, 2),
        "concurrency": CONCURRENCY,
        "server_cpu_us_per_event": round(server_cpu / n * 1e6),
        "client_cpu_us_per_event": round(load["client_cpu_s"] / n * 1e6),
    }
    return result


def event_mix(events: int) -> list[tuple[dict, bytes]]:
    """Distinct hyperparameter messages, then a fifth of them delivered again (duplicates)."""
    unique = [
        push_request({"pipeline": "digits", "hyperparameters": {"lr": 0.01}}, f"m-{uuid.uuid4().hex}")
        for _ in range(events)
    ]
    return unique + unique[: events // 5]


def run(backend: str, database_url: str, events: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="ctflow-bench-"))
    settings = Settings(home=home, database_url=database_url)
    seed(settings)
    env = {"CTFLOW_HOME": str(home), "CTFLOW_DATABASE_URL": database_url, "CTFLOW_LOG_LEVEL": "WARNING"}
    proc, _, port = start_service("hparam_consumer.app:app", env)
    try:
        result = measure("hparam_consumer_events", proc, port, event_mix(events), ledger=backend)
    finally:
        stop(proc)
    result["goal"] = ">= 1000 events/s, p99 < 50 ms"
    result["ratio_to_goal"] = round(result["events_per_s"] / 1000, 2)
    print(json.dumps(result), flush=True)
    return result


def ceiling(events: int) -> dict:
    """The same load against a bare FastAPI app that does only the HTTP part."""
    proc, _, port = start_service("tests.bench.bare_events_app:app", {})
    try:
        result = measure("bare_fastapi_events", proc, port, event_mix(events))
    finally:
        stop(proc)
    print(json.dumps(result), flush=True)
    return result


def main(events: int = 3000) -> list[dict]:
    import psycopg

    name = f"ctflow_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        results = [
            run("sqlite", f"sqlite:///{tempfile.mkdtemp()}/ledger.db", events),
            run("postgresql", f"postgresql://postgres@127.0.0.1:5432/{name}", events),
            ceiling(events),
        ]
        bare = results[-1]["events_per_s"]
        for result in results[:-1]:  # this machine's speed varies: the ratio to the ceiling, measured alongside
            print(
                json.dumps(
                    {
                        "benchmark": "hparam_consumer_events_vs_bare_fastapi",
                        "ledger": result["ledger"],
                        "ratio": round(result["events_per_s"] / bare, 3),
                        "goal_ratio": round(1000 / bare, 3),
                    }
                ),
                flush=True,
            )
        return results
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
