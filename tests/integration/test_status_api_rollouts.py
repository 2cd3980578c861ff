"""The status API and CLI show rollouts from the ledger: lists with filters, and one rollout with its plan,
step and every decision with its figures (read-only until the deployer writes them)."""

from __future__ import annotations

import json
import subprocess
import sys

from ctflow.contracts import ServingSpec
from deployer.decide import Figures, Observation
from deployer.plan import plan_of
from deployer.progress import advance, begin
from status_api import app as module
from tests.integration.conftest import client_for
from tests.support import serving

PLAN = plan_of(ServingSpec(service="digits-model"))


def _rollout_with_ticks(deps) -> str:  # type: ignore[no-untyped-def]
    """Version 4 into production, made ready and judged once (a passed window: 10% -> 50%)."""
    with deps.ledger.transaction() as tx:
        rollout = begin(
            tx, pipeline="digits", environment="production", candidate="4", stable="3", run_id="r4", plan=PLAN, now=0.0
        )
    assert rollout is not None
    for seen in (
        Observation(now=1.0, canary_ready=True, smoke_passed=True),
        Observation(now=60.0, canary=Figures(200, 0, 20.0), stable=Figures(1000, 1, 18.0)),
    ):
        with deps.ledger.transaction() as tx:
            advance(tx, rollout, seen)
    return rollout


def test_rollouts_are_listed_filtered_and_shown_with_their_decisions(deps):
    rollout = _rollout_with_ticks(deps)
    with client_for(module, deps) as client:
        [listed] = client.get("/rollouts", params={"pipeline": "digits", "environment": "production"}).json()
        assert client.get("/rollouts", params={"environment": "staging"}).json() == []
        assert client.get("/rollouts", params={"state": "promoted"}).json() == []
        assert client.get("/rollouts", params={"state": "nonsense"}).status_code == 422
        detail = client.get(f"/rollouts/{rollout}").json()
        missing = client.get("/rollouts/digits-production-v99")
    assert (listed["rollout_id"], listed["phase"], listed["weight"]) == ("digits-production-v4", "analysing", 50)
    assert detail["step"] == {"n": 2, "of": 3} and detail["plan"]["steps"] == [10, 50, 100]
    assert [d["weight"] for d in detail["decisions"]] == [10, 50]
    assert detail["decisions"][1]["verdict"] == "passed" and detail["decisions"][1]["figures"]["canary_requests"] == 200
    assert missing.status_code == 404 and "no rollout" in missing.json()["detail"]


def test_the_cli_lists_rollouts_as_a_table_and_json(deps):
    _rollout_with_ticks(deps)
    app = module.create_app()
    app.state.deps = deps
    with serving(app) as url:
        table = subprocess.run(
            [sys.executable, "-m", "ctflow.cli", "rollouts", "--api", url], capture_output=True, text=True, timeout=60
        )
        listed = subprocess.run(
            [sys.executable, "-m", "ctflow.cli", "rollouts", "--json", "--api", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        one = subprocess.run(
            [sys.executable, "-m", "ctflow.cli", "rollout", "digits-production-v4", "--api", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert table.returncode == 0 and "ROLLOUT" in table.stdout and "digits-production-v4" in table.stdout
    assert "analysing" in table.stdout and "50%" in table.stdout
    assert json.loads(listed.stdout)[0]["candidate_version"] == "4"
    assert len(json.loads(one.stdout)["decisions"]) == 2
