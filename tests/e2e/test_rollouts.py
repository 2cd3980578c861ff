"""Rollouts end to end on the embedded stack: real TorchServe revisions behind the router, MLflow, the ledger.

Each test registers hand-made models (tests/serving_support.py) and publishes
`model.registered`; the deployer packages, starts, steps, judges and promotes or rolls
back on its own, with a fast plan (2 s windows).
"""

from __future__ import annotations

import time
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
from tests.support import wait_for

pytestmark = pytest.mark.integration

FAST_PLAN = {
    "service": "digits-model",
    "canary_steps": [20, 50, 100],
    "analysis_interval_seconds": 2,
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
def stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    settings = Settings(
        home=tmp_path / "home",
        pipelines_dir=pipelines_dir(tmp_path / "pipelines"),
        reconcile_interval_seconds=0.5,
        rollout_tick_seconds=0.5,
    )
    with EmbeddedStack(settings) as running:
        yield running


def rollout_of(deps: Dependencies, rollout_id: str) -> dict:
    with deps.ledger.reading() as tx:
        row = rollouts.get(tx, rollout_id)
        if row is None:
            return {"phase": None, "pending": None}
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
