"""Rollouts end to end on the embedded stack: real TorchServe revisions behind the router, MLflow, the ledger.

Each test registers hand-made models (tests/serving_support.py) and publishes
`model.registered`; the deployer packages, starts, steps, judges and promotes or rolls
back on its own, with a fast plan (2 s windows).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from ctflow.deps import Dependencies
from ctflow.embedded.stack import EmbeddedStack
from ctflow.ledger import rollouts
from ctflow.registry import CHAMPION
from ctflow.settings import REPO_ROOT, Settings
from tests.serving_support import Traffic, announce, register, write_model
from tests.support import stop_servers, wait_for

pytestmark = pytest.mark.integration

FAST_PLAN = {
    "service": "digits-model",
    "canary_steps": [20, 50, 100],
    "analysis_interval_seconds": 2.5,
    "warmup_seconds": 0.5,
    "min_requests": 20,
    "max_error_rate": 0.05,
    "max_error_rate_increase": 0.05,
    "max_p95_latency_ms": 2000,
    "max_p95_latency_ratio": 2.0,
    "failed_windows": 1,
    "inconclusive_deadline_seconds": 60,
    "synthetic_traffic": True,
}


def pipelines_dir(folder: Path, **serving: object) -> Path:
    spec = yaml.safe_load((REPO_ROOT / "deploy" / "pipelines" / "digits.yaml").read_text())
    spec["serving"] = {**FAST_PLAN, **serving}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "digits.yaml").write_text(yaml.safe_dump(spec))
    return folder


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmbeddedStack]:
    """The stack, with the fast plan (and what a test's `serving` marker changes in it)."""
    marker = request.node.get_closest_marker("serving")
    settings = Settings(
        home=tmp_path / "home",
        pipelines_dir=pipelines_dir(tmp_path / "pipelines", **(marker.kwargs if marker else {})),
        reconcile_interval_seconds=0.5,
        rollout_tick_seconds=0.5,
    )
    with EmbeddedStack(settings) as running:
        yield running


def rollout_of(deps: Dependencies, rollout_id: str) -> dict:
    with deps.ledger.reading() as tx:
        row = rollouts.get(tx, rollout_id)
        if row is None:
            return {"phase": None, "pending": None, "state": {}}
        return {"phase": row.phase, "state": dict(row.state), "pending": row.pending, "serving": row.serving}


def champion(deps: Dependencies) -> str | None:
    ref = deps.registry.champion("digits")
    return ref.version if ref else None


def first_deployment(stack: EmbeddedStack, tmp_path: Path) -> str:
    """Version 1 serves at 100% (a first deployment: readiness and smoke test, then all traffic)."""
    deps = stack.dependencies
    run_id, version = register(deps, "digits", write_model(tmp_path / "m1"), "v1")
    announce(deps, "digits", run_id, version, copies=3)
    rollout_id = f"digits-production-v{version}"
    wait_for(lambda: rollout_of(deps, rollout_id)["phase"] == "promoted", timeout=90)
    wait_for(lambda: rollout_of(deps, rollout_id)["pending"] is None, timeout=10)
    return version


def test_a_first_deployment_serves_all_traffic_and_moves_the_champion(stack: EmbeddedStack, tmp_path: Path) -> None:
    deps = stack.dependencies
    version = first_deployment(stack, tmp_path)
    assert champion(deps) == version
    with deps.ledger.reading() as tx:
        assert [r.id for r in rollouts.listing(tx, pipeline="digits")] == ["digits-production-v1"]  # 3 deliveries
    url = f"{stack.serving_urls['digits'].rstrip('/')}/v1/models/digits:predict"
    answer = httpx.post(url, json={"instances": [[[[0.0] * 8] * 8]]}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == version
    assert answer.headers["ctflow-model-version"] == version
    assert answer.headers["ctflow-revision"].startswith("digits-model-v1-")
    # The CLI: a prediction from a file, and the model's view.
    import subprocess
    import sys

    request = tmp_path / "request.json"
    request.write_text('{"instances": [[[[0.5, 0, 0, 0, 0, 0, 0, 0]' + ", [0, 0, 0, 0, 0, 0, 0, 0]" * 7 + "]]]}")
    api = stack.urls["status-api"].rstrip("/")
    cli = [sys.executable, "-m", "ctflow.cli"]
    served = subprocess.run(
        [*cli, "predict", "--pipeline", "digits", "--json", str(request), "--url", stack.serving_urls["digits"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 0, served.stderr
    assert json.loads(served.stdout)["model_version"] == version
    shown = subprocess.run([*cli, "model", "digits", "--api", api], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "champion" in shown.stdout and "production: version 1 serves" in shown.stdout


def decisions_of(deps: Dependencies, rollout_id: str) -> list[tuple[float, str, int, str]]:
    with deps.ledger.reading() as tx:
        return [(d.at.timestamp(), d.phase, d.weight, d.reason) for d in rollouts.decisions(tx, rollout_id)]


def canary_rollout(stack: EmbeddedStack, tmp_path: Path, kind: str, tag: str) -> str:
    deps = stack.dependencies
    run_id, version = register(deps, "digits", write_model(tmp_path / tag, kind), tag)
    announce(deps, "digits", run_id, version)
    return version


def settled_check(deps: Dependencies, rollout_id: str) -> bool:
    """Between ticks (the last decision's actions carried out, nothing moving), registry and serving agree:
    the champion is the version with all the traffic, or the stable (older) one while a canary has a share.
    False when the rollout moved while this looked (nothing was checked)."""
    before = rollout_of(deps, rollout_id)
    if before["pending"] is not None:
        return False
    weights, current = deps.serving.traffic("digits-model"), champion(deps)
    if rollout_of(deps, rollout_id) != before:
        return False  # a tick happened while reading
    versions = {int(rev.rsplit("-v", 1)[1].split("-")[0]) for rev, pct in weights.items() if pct}
    assert str(min(versions)) == current, (current, weights, before["phase"])
    return True


@pytest.mark.serving(analysis_interval_seconds=8)  # >= 200 requests a step at the router
def test_a_better_canary_is_stepped_through_every_weight_and_promoted(stack: EmbeddedStack, tmp_path: Path) -> None:
    deps = stack.dependencies
    stable = first_deployment(stack, tmp_path)
    url = f"{stack.serving_urls['digits'].rstrip('/')}/v1/models/digits:predict"
    with Traffic(url, rate=100, threads=2) as live:
        version = canary_rollout(stack, tmp_path, "good", "v2")
        rollout_id = f"digits-production-v{version}"

        def promoted() -> bool:
            ro = rollout_of(deps, rollout_id)
            if ro["phase"] != "promoted":
                assert champion(deps) == stable  # the champion moves only at promotion
            settled_check(deps, rollout_id)
            return ro["phase"] == "promoted" and ro["pending"] is None

        wait_for(promoted, timeout=120, interval=0.2)
    assert champion(deps) == version
    assert deps.registry.by_alias("digits", "previous").version == stable
    assert deps.serving.traffic("digits-model") == {rollout_of(deps, rollout_id)["serving"]["revision"]["name"]: 100}
    assert live.answers.stable_failures == 0, live.answers.failures
    # At each step the share of requests the canary answered is within 5 points of its weight.
    decided = decisions_of(deps, rollout_id)
    spans: list[tuple[int, float, float]] = []  # (weight, from, to)
    for (at, _, weight, _), (later, *_) in zip(decided, [*decided[1:], (time.time(), "", 0, "")], strict=True):
        if spans and spans[-1][0] == weight:
            spans[-1] = (weight, spans[-1][1], later)
        else:
            spans.append((weight, at, later))
    checked = []
    for weight, start, end in spans:
        window = [v for t, v, status in live.windows if start + 0.2 < t < end and status == 200]
        if weight in (20, 50):
            assert len(window) >= 200, (weight, len(window))
            share = 100 * sum(1 for v in window if v == version) / len(window)
            per_second = Counter(
                (int(t - start), v) for t, v, status in live.windows if start + 0.2 < t < end and status == 200
            )
            assert abs(share - weight) <= 5, (weight, share, len(window), sorted(per_second.items()))
            checked.append(weight)
    assert checked == [20, 50], spans


@pytest.mark.parametrize(("kind", "problem"), [("flaky", "error rate"), ("slow", "p95")])
def test_a_faulty_canary_is_rolled_back_and_stable_never_fails(
    stack: EmbeddedStack, tmp_path: Path, kind: str, problem: str
) -> None:
    deps = stack.dependencies
    stable = first_deployment(stack, tmp_path)
    url = f"{stack.serving_urls['digits'].rstrip('/')}/v1/models/digits:predict"
    with Traffic(url, rate=60, canary_version="2") as live:
        version = canary_rollout(stack, tmp_path, kind, "v2")
        rollout_id = f"digits-production-v{version}"
        wait_for(lambda: rollout_of(deps, rollout_id)["phase"] == "analysing", timeout=90, interval=0.1)
        began, began_at = time.monotonic(), time.time()
        wait_for(lambda: rollout_of(deps, rollout_id)["phase"] == "rolled_back", timeout=30, interval=0.1)
        took = time.monotonic() - began
        wait_for(lambda: rollout_of(deps, rollout_id)["pending"] is None, timeout=10)
    decided = [
        f"{at - began_at:.2f} {phase} {weight}% {reason}"
        for at, phase, weight, reason in decisions_of(deps, rollout_id)
        if reason != "window open"
    ]
    assert took <= 2 * (FAST_PLAN["analysis_interval_seconds"] + FAST_PLAN["warmup_seconds"]) + 1.5, "\n".join(decided)
    assert champion(deps) == stable
    assert live.answers.stable_failures == 0, live.answers.failures
    assert settled_check(deps, rollout_id)
    assert list(deps.serving.traffic("digits-model").values()) == [100]
    reason = rollout_of(deps, rollout_id)["state"]["reason"]
    assert problem in reason, reason
    detail = httpx.get(f"{stack.urls['status-api'].rstrip('/')}/rollouts/{rollout_id}", timeout=10).json()
    failed = [d for d in detail["decisions"] if d["verdict"] == "failed"]
    assert failed and failed[-1]["figures"]["canary_requests"] >= FAST_PLAN["min_requests"]


@pytest.mark.parametrize(("kind", "outcome"), [("good", "promoted"), ("flaky", "rolled_back")])
def test_with_no_live_traffic_synthetic_requests_decide(
    stack: EmbeddedStack, tmp_path: Path, kind: str, outcome: str
) -> None:
    deps = stack.dependencies
    stable = first_deployment(stack, tmp_path)
    version = canary_rollout(stack, tmp_path, kind, "v2")
    rollout_id = f"digits-production-v{version}"
    wait_for(lambda: rollout_of(deps, rollout_id)["phase"] == outcome, timeout=120, interval=0.2)
    wait_for(lambda: rollout_of(deps, rollout_id)["pending"] is None, timeout=10)
    assert champion(deps) == (version if outcome == "promoted" else stable)
    assert settled_check(deps, rollout_id)  # ended: nothing moves, so it checks
    reasons = [reason for *_, reason in decisions_of(deps, rollout_id)]
    assert any("synthetic" in r for r in reasons), reasons


def test_a_stack_killed_mid_rollout_finishes_it_after_a_restart_adopting_its_revisions(tmp_path: Path) -> None:
    """SIGKILL of `ctflow up` while the canary has a share: the TorchServe processes outlive it, the next
    `ctflow up` on the home adopts them (same pids), and the rollout ends promoted with registry and serving
    agreeing."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from ctflow import bootstrap

    home, pipelines = tmp_path / "home", pipelines_dir(tmp_path / "pipelines", analysis_interval_seconds=3)
    env = {
        **os.environ,
        "CTFLOW_PIPELINES_DIR": str(pipelines),
        "CTFLOW_RECONCILE_INTERVAL_SECONDS": "0.5",
        "CTFLOW_ROLLOUT_TICK_SECONDS": "0.5",
    }
    env.pop("MLFLOW_TRACKING_URI", None)

    def up() -> subprocess.Popen:  # type: ignore[type-arg]
        (home / "endpoints.json").unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ctflow.cli", "up", "--home", str(home)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        wait_for(lambda: (home / "endpoints.json").exists() or proc.poll() is not None, timeout=60)
        assert proc.poll() is None
        return proc

    first = up()
    deps = bootstrap.build(Settings(home=home, pipelines_dir=pipelines))
    try:
        run_id, v1 = register(deps, "digits", write_model(tmp_path / "m1"), "v1")
        announce(deps, "digits", run_id, v1)
        wait_for(lambda: rollout_of(deps, "digits-production-v1")["phase"] == "promoted", timeout=90)
        run_id, v2 = register(deps, "digits", write_model(tmp_path / "m2"), "v2")
        announce(deps, "digits", run_id, v2)
        rollout_id = f"digits-production-v{v2}"
        wait_for(lambda: rollout_of(deps, rollout_id)["state"].get("weight") == 20, timeout=90, interval=0.1)
        revisions = home / "serving" / "digits-model" / "revisions"
        pids = {p.parent.name: json.loads(p.read_text())["pid"] for p in revisions.glob("*/server.json")}
        assert len(pids) == 2
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        second = up()
        try:
            wait_for(lambda: rollout_of(deps, rollout_id)["phase"] == "promoted", timeout=90, interval=0.2)
            wait_for(lambda: rollout_of(deps, rollout_id)["pending"] is None, timeout=10)
            router = json.loads((home / "endpoints.json").read_text())["serving"]["digits"].rstrip("/")
            canary = rollout_of(deps, rollout_id)["serving"]["revision"]["name"]
            assert httpx.get(f"{router}/healthz", timeout=5).json()["weights"] == {canary: 100}
            assert champion(deps) == v2
            # The canary was adopted, not restarted; the old stable revision was retired after the promotion.
            now = {p.parent.name: json.loads(p.read_text())["pid"] for p in revisions.glob("*/server.json")}
            assert now == {canary: pids[canary]}
            answer = httpx.post(f"{router}/v1/models/digits:predict", json={"instances": [[[[0.5] * 8] * 8]]})
            assert answer.status_code == 200 and answer.json()["model_version"] == v2
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        deps.ledger.dispose()
        stop_servers(home)  # whatever a failure left running


BAD_REQUESTS = {
    "wrong shape": b'{"instances": [[[1, 2, 3]]]}',
    "wrong dtype": b'{"instances": [[[["a", 0, 0, 0, 0, 0, 0, 0]]]]}',
    "NaN": b'{"instances": [[[' + b",".join([b"[NaN,0,0,0,0,0,0,0]"] + [b"[0,0,0,0,0,0,0,0]"] * 7) + b"]]]}",
    "out of range": b'{"instances": [[[' + b",".join([b"[7,0,0,0,0,0,0,0]"] + [b"[0,0,0,0,0,0,0,0]"] * 7) + b"]]]}",
    "no instances": b'{"instances": []}',
    "not an object": b"[1, 2]",
    "empty": b"",
    "not JSON": b"this is not json",
    "10 MB": b'{"instances": [' + b"0," * (5 * 1024 * 1024) + b"0]}",
}


def test_bad_requests_get_a_4xx_with_a_reason_and_count_as_client_errors(stack: EmbeddedStack, tmp_path: Path) -> None:
    deps = stack.dependencies
    first_deployment(stack, tmp_path)
    revision = next(iter(deps.serving.traffic("digits-model")))
    base = stack.serving_urls["digits"].rstrip("/")
    since = time.time()
    for url in (f"{base}/v1/models/digits:predict", f"{base}/revisions/{revision}/v1/models/digits:predict"):
        for what, body in BAD_REQUESTS.items():
            answer = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
            assert 400 <= answer.status_code < 500, (what, answer.status_code, answer.text)
            assert answer.json()["error"], what
    shape = httpx.post(f"{base}/v1/models/digits:predict", content=BAD_REQUESTS["wrong shape"], timeout=10)
    assert "instance 0" in shape.json()["error"] and "shape" in shape.json()["error"]
    figures = deps.serving.figures("digits-model", revision, since, time.time())
    assert figures.requests == 0 and figures.server_errors == 0  # nothing held against the revision
    # The ones the model server saw are its client errors; the router refused the empty and oversized ones.
    assert figures.client_errors == 2 * (len(BAD_REQUESTS) - 2) + 1


@pytest.mark.serving(analysis_interval_seconds=600, synthetic_traffic=False)  # nothing passes unless a person acts
def test_commands_supersede_and_a_moved_champion(stack: EmbeddedStack, tmp_path: Path) -> None:
    import subprocess
    import sys

    deps = stack.dependencies
    api = stack.urls["status-api"].rstrip("/")
    v1 = first_deployment(stack, tmp_path)

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "ctflow.cli", *args, "--api", api], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def reach(rollout_id: str, phase: str, weight: int | None = None) -> dict:
        def there() -> bool:
            ro = rollout_of(deps, rollout_id)
            return ro["phase"] == phase and ro["pending"] is None and weight in (None, ro["state"].get("weight"))

        wait_for(there, timeout=90, interval=0.1)
        settled_check(deps, rollout_id)
        return rollout_of(deps, rollout_id)

    v2 = canary_rollout(stack, tmp_path, "good", "v2")
    r2 = f"digits-production-v{v2}"
    reach(r2, "analysing", 20)
    answer = httpx.post(f"{api}/rollouts/{r2}/pause", json={"by": "alice", "reason": "looking"}, timeout=10)
    assert answer.status_code == 202 and answer.json()["pending_command"]["command"] == "pause"
    assert reach(r2, "paused")["state"]["reason"] == "paused by alice (looking)"
    cli("rollout", "resume", r2, "--by", "alice")
    reach(r2, "analysing", 20)
    # A newer version supersedes v2: traffic back to stable first, registry untouched.
    v3 = canary_rollout(stack, tmp_path, "good", "v3")
    r3 = f"digits-production-v{v3}"
    assert "superseded by version 3" in reach(r2, "superseded")["state"]["reason"]
    assert champion(deps) == v1
    reach(r3, "analysing", 20)
    assert "promote of" in cli("rollout", "promote", r3, "--by", "bob")
    assert reach(r3, "promoted")["state"]["reason"] == "promoted by bob"
    assert champion(deps) == v3 and deps.registry.by_alias("digits", "previous").version == v1
    # Someone moves the champion by hand mid-rollout: the promotion ends in a recorded conflict.
    v4 = canary_rollout(stack, tmp_path, "good", "v4")
    r4 = f"digits-production-v{v4}"
    reach(r4, "analysing", 20)
    deps.registry.set_alias("digits", CHAMPION, v1)
    cli("rollout", "promote", r4)
    ended = wait_for(lambda: (ro := rollout_of(deps, r4))["phase"] == "conflict" and ro["pending"] is None and ro)
    assert "names version 1, not 3" in ended["state"]["reason"]
    assert champion(deps) == v1  # left as the person set it
    assert list(deps.serving.traffic("digits-model")) == [rollout_of(deps, r3)["serving"]["revision"]["name"]]
    # Ended rollouts refuse commands; the run detail links its rollout; the model view shows it all.
    assert httpx.post(f"{api}/rollouts/{r4}/abort", timeout=10).status_code == 409
    assert httpx.post(f"{api}/rollouts/nothing-here/abort", timeout=10).status_code == 404
    run = httpx.get(f"{api}/runs/{httpx.get(f'{api}/rollouts/{r3}').json()['run_id']}", timeout=10).json()
    assert run["state"] == "promoted" and run["rollout"] == f"/rollouts/{r3}"
    model = httpx.get(f"{api}/models/digits", timeout=30).json()
    assert [v["version"] for v in model["versions"]] == ["4", "3", "2", "1"]
    assert model["aliases"] == {"champion": "1", "challenger": None, "previous": "1"}
    assert model["environments"]["production"]["serving_version"] == v3
    phases = {r["rollout_id"]: r["phase"] for r in httpx.get(f"{api}/rollouts", timeout=10).json()}
    assert phases == {"digits-production-v1": "promoted", r2: "superseded", r3: "promoted", r4: "conflict"}
