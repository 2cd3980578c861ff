"""The deployer's `model.registered` handler on a real ledger (SQLite and PostgreSQL), through its app:
concurrent redeliveries make one rollout, newer versions supersede, bad registrations are dead letters."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ctflow import events
from ctflow.deps import Dependencies
from ctflow.ledger import dead_letters, rollouts, runs
from ctflow.ledger.tables import OutboxMessage
from ctflow.topology import COMPLETION_HANDLER
from tests import serving_support
from tests.support import serving

pytestmark = pytest.mark.integration


def registered_run(deps: Dependencies, tag: str, version: str) -> str:
    run_id = runs.run_id_for("digits", "deployer-test", tag)
    serving_support.registered_run(deps, "digits", run_id, version)
    return run_id


def registration(run_id: str, version: str, changes: dict[str, Any] | None = None) -> tuple[dict[str, str], bytes]:
    data = {"run_id": run_id, "pipeline": "digits", "model_name": "digits", "model_version": version, "metrics": {}}
    data |= changes or {}
    subject = data["run_id"]
    event = events.run_event(
        events.MODEL_REGISTERED, COMPLETION_HANDLER, subject, data, event_id=f"model-registered-{subject}"
    )
    return events.to_http_binary(event)


def post_all(deps: Dependencies, deliveries: list[tuple[dict[str, str], bytes]]) -> list[dict]:
    from deployer import app as module

    app = module.create_app()
    app.state.deps = deps
    with serving(app) as url, ThreadPoolExecutor(len(deliveries)) as pool:
        answers = list(pool.map(lambda d: httpx.post(url, headers=d[0], content=d[1], timeout=60), deliveries))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    return [a.json() for a in answers]


def started_events(deps: Dependencies) -> list[dict]:
    with deps.ledger.reading() as tx:
        rows = tx.scalars(select(OutboxMessage).where(OutboxMessage.event_type == events.ROLLOUT_STARTED)).all()
        return [json.loads(row.data) for row in rows]


def test_three_concurrent_deliveries_make_one_rollout_and_the_run_rolls_out(deps):
    run_id = registered_run(deps, "a", "1")
    answers = post_all(deps, [registration(run_id, "1")] * 3)
    assert sorted(a["status"] for a in answers) == ["duplicate", "duplicate", "processed"]
    with deps.ledger.reading() as tx:
        (rollout,) = rollouts.listing(tx, pipeline="digits")
        run = runs.get(tx, run_id)
        assert run is not None and run.state == "rolling_out" and run.rollout_id == rollout.id
        assert rollout.id == "digits-production-v1" and rollout.stable_version is None  # nothing served yet
        assert rollout.phase == "readying" and rollout.serving == {
            "service": "digits-model",
            "revision": None,
            "stable_revision": None,
        }
        assert rollout.plan["steps"] == [10, 50, 100]  # the spec's plan, kept with the rollout
    (started,) = started_events(deps)
    assert started["environment"] == "production" and started["phase"] == "readying"


def test_a_newer_version_supersedes_the_rollout_under_way_and_an_older_one_is_ignored(deps):
    first, second = registered_run(deps, "a", "1"), registered_run(deps, "b", "2")
    post_all(deps, [registration(first, "1")])
    post_all(deps, [registration(second, "2")])
    with deps.ledger.transaction() as tx:
        older = rollouts.get(tx, "digits-production-v1", for_update=True)
        assert older is not None and older.superseded_by == "2"
        # Say version 2 was promoted: a registration of version 1 again (a late replay) changes nothing.
        newer = rollouts.get(tx, "digits-production-v2", for_update=True)
        assert newer is not None
        newer.phase, newer.state = "promoted", {**newer.state, "phase": "promoted"}
    late = registered_run(deps, "c", "1")
    (answer,) = post_all(deps, [registration(late, "1")])
    assert answer["status"] == "ignored" and "not newer than version 2" in answer["detail"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"pipeline": "nowhere"}, "has no spec"),
        ({"model_version": "latest"}, "not a registry version number"),
        ({"run_id": "digits-0000000000000000"}, "which the ledger does not know"),
    ],
)
def test_a_bad_registration_is_a_dead_letter_with_its_reason(deps, change, reason):
    run_id = registered_run(deps, "a", "1")
    headers, body = registration(run_id, "1", change)
    (answer,) = post_all(deps, [(headers, body)])
    assert answer["status"] == "rejected"
    with deps.ledger.reading() as tx:
        (letter,) = dead_letters.listing(tx)
        assert reason in letter.reason and letter.consumer == "deployer"
        assert rollouts.listing(tx) == []
