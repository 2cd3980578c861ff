"""Serving benchmarks, measured side by side on this machine (one JSON line each):

- `router_overhead`: prediction latency through the embedded router next to calling the same
  TorchServe revision directly, at concurrency 1 and 16, alternating rounds (goal: <= 1 ms
  added at p50); p50 and p99 of both.
- `model_server_start`: a revision's process start to its first answered prediction
  (TorchServe's JVM, the Python worker, torch.jit.load, the warm-up), and the archive build.
- `loop_overhead`: one `ctflow demo` (the run created for the dropped dataset -> its first
  deployment serving), per stage from the run's timeline, with the control plane's share:
  total minus training (trainer process included) and model-server start-to-ready.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: `python tests/bench/...`

from ctflow.blobstore.local import LocalFolderBlobStore  # noqa: E402
from ctflow.serving import Revision, revision_name  # noqa: E402
from ctflow.serving.embedded import EmbeddedServing  # noqa: E402
from ctflow.settings import Settings  # noqa: E402
from model_server.archive import build_archive  # noqa: E402
from tests.bench.load_client import run_load  # noqa: E402
from tests.serving_support import write_model  # noqa: E402
from tests.support import wait_for  # noqa: E402

BODY = json.dumps({"instances": [[[[0.25] * 8] * 8]]}).encode()
HEADERS = {"content-type": "application/json"}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _serving(home: Path, rounds: int) -> tuple[EmbeddedServing, str, list[float], float]:
    """A serving backend with one ready revision; (backend, its revision, start-to-ready seconds, archive s)."""
    blobs = LocalFolderBlobStore(home / "bucket")
    model = write_model(home / "model")
    started = time.perf_counter()
    sha = build_archive(model, home / "model.mar", pipeline="digits", version="1")
    archive_seconds = time.perf_counter() - started
    blobs.write_bytes(f"serving/digits/v1/{sha}.mar", (home / "model.mar").read_bytes())
    serving = EmbeddedServing(Settings(home=home), blobs)
    serving.open(["bench-model"])
    starts, name = [], ""
    for n in range(rounds):
        name = revision_name("bench-model", str(n + 1), sha)
        revision = Revision(name, "digits", "1", f"serving/digits/v1/{sha}.mar", sha, {"instances": []})
        started = time.perf_counter()
        serving.create_revision("bench-model", revision)
        wait_for(lambda name=name: serving.ready("bench-model", name), timeout=120, interval=0.05)
        starts.append(time.perf_counter() - started)
        if n + 1 < rounds:
            serving.stop_revision("bench-model", name)
    serving.set_traffic("bench-model", {name: 100})
    return serving, name, starts, archive_seconds


def router_and_start(rounds: int = 3, requests: int = 1500) -> list[dict]:
    home = Path(tempfile.mkdtemp(prefix="ctflow-bench-serving-"))
    serving, revision, starts, archive_seconds = _serving(home, rounds)
    results = []
    try:
        start = {
            "benchmark": "model_server_start",
            "start_to_ready_median_s": round(statistics.median(starts), 2),
            "start_to_ready_s": [round(s, 2) for s in starts],
            "archive_build_s": round(archive_seconds, 3),
        }
        print(json.dumps(start), flush=True)
        results.append(start)
        direct = f"{serving._service('bench-model').processes[revision].base_url}/v1/models/digits:predict"
        routed = serving.prediction_url("bench-model", "digits")
        work = [(HEADERS, BODY)] * requests
        for concurrency in (1, 16):
            run_load(direct, work[:200], concurrency)  # warm both paths
            run_load(routed, work[:200], concurrency)
            ours: list[float] = []
            bare: list[float] = []
            for _ in range(3):
                for url, sink in ((routed, ours), (direct, bare)):
                    done = run_load(url, work, concurrency)
                    assert not done["failures"], done["failures"][:3]
                    sink.extend(done["latencies"])
            p50, bare_p50 = _percentile(ours, 0.5) * 1000, _percentile(bare, 0.5) * 1000
            result = {
                "benchmark": "router_overhead",
                "concurrency": concurrency,
                "router_p50_ms": round(p50, 3),
                "router_p99_ms": round(_percentile(ours, 0.99) * 1000, 3),
                "direct_p50_ms": round(bare_p50, 3),
                "direct_p99_ms": round(_percentile(bare, 0.99) * 1000, 3),
                "added_p50_ms": round(p50 - bare_p50, 3),
                "ratio_p50": round(p50 / bare_p50, 2),
                "goal": "added_p50_ms <= 1 (concurrency 1)",
            }
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        serving.close()
    return results


def loop_overhead() -> dict:
    """One demo run; each stage's seconds from the run's timeline."""
    import contextlib
    import io

    from ctflow.demo import run_demo
    from ctflow.ledger import Ledger, runs

    home = Path(tempfile.mkdtemp(prefix="ctflow-bench-loop-"))
    with contextlib.redirect_stdout(io.StringIO()):
        assert run_demo(Settings(home=home), timeout=600) == 0
    ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
    with ledger.reading() as tx:
        (run,) = runs.listing(tx, limit=10)
        at = {t.name: t.at.timestamp() for t in runs.timeline(tx, run.id) if t.kind == "state"}
    ledger.dispose()
    stages = {
        "requested_to_training_s": at["training"] - at["requested"],
        "training_s": at["evaluating"] - at["training"],
        "evaluation_s": at["registered"] - at["evaluating"],
        "registered_to_rollout_s": at["rolling_out"] - at["registered"],
        "rollout_to_serving_s": at["promoted"] - at["rolling_out"],
    }
    result = {"benchmark": "loop_overhead", **{k: round(v, 3) for k, v in stages.items()}}
    result["total_s"] = round(at["promoted"] - at["requested"], 3)  # the run's life: dataset arrived -> serving
    print(json.dumps(result), flush=True)
    return result


def main() -> list[dict]:
    results = router_and_start()
    loop = loop_overhead()
    start = results[0]["start_to_ready_median_s"]
    loop["control_plane_s"] = round(loop["total_s"] - loop["training_s"] - start, 3)
    loop["note"] = "control plane: total minus training (process start included) and model-server start-to-ready"
    print(json.dumps({**loop, "benchmark": "loop_control_plane", "goal": "control_plane_s < 2"}), flush=True)
    return [*results, loop]


if __name__ == "__main__":
    main()
