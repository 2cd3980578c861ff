"""A process killed with SIGKILL after commit and before publish loses nothing."""

from __future__ import annotations

import subprocess

import httpx
import pytest
from sqlalchemy import select

from ctflow.dataset_drop import drop_folder
from ctflow.ledger.tables import BusMessage, OutboxMessage, Run
from tests.support import free_port, gcs_event_request, push_request, start_service


def _start(settings, port: int, app: str = "hparam_consumer.app:app", **env: str) -> subprocess.Popen:  # type: ignore[type-arg]
    environment = {"CTFLOW_HOME": str(settings.home), "CTFLOW_DATABASE_URL": settings.ledger_url,
                   "CTFLOW_PIPELINES_DIR": str(settings.pipelines_dir), "CTFLOW_OUTBOX_GRACE_SECONDS": "0", **env}
    proc, _, _ = start_service(app, environment, port, timeout=30)
    return proc


def test_sigkill_between_commit_and_publish_then_restart_delivers_outbox(deps, listener, digits_folder):
    """Runs committed before the kill survive; after restart, reconcile publishes their events once."""
    drop_folder(digits_folder, deps.pipelines.get("digits"), deps.blobs, "v1")
    h, b = gcs_event_request(deps.settings.bucket_dir, "datasets/digits/v1/_MANIFEST.json")
    assert listener.post("/", content=b, headers=h).json()["status"] == "processed"
    deps.relay.publish()  # the dataset event is not what this test is about

    port = free_port()
    headers, body = push_request({"pipeline": "digits", "sweep": {"lr": [0.1, 0.01]}}, "m-crash")
    doomed = _start(deps.settings, port, CTFLOW_FAILPOINTS="after-commit")
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"http://127.0.0.1:{port}/", content=body, headers=headers, timeout=30)
    assert doomed.wait(timeout=10) == -9  # SIGKILL, not a clean exit

    with deps.ledger.transaction() as tx:
        runs = [r for r in tx.scalars(select(Run)) if r.trigger.get("message_id") == "m-crash"]
        unsent = tx.scalars(select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))).all()
    assert len(runs) == 2 and {u.event_type for u in unsent} == {"ctflow.training.requested.v1"} and len(unsent) == 2

    revived = _start(deps.settings, port)
    try:
        # Pub/Sub redelivers the unacknowledged message: a duplicate now.
        again = httpx.post(f"http://127.0.0.1:{port}/", content=body, headers=headers, timeout=30).json()
        assert again["status"] == "duplicate"
        assert httpx.post(f"http://127.0.0.1:{port}/reconcile", timeout=30).json() == {"outbox_published": 2}
        assert httpx.post(f"http://127.0.0.1:{port}/reconcile", timeout=30).json() == {"outbox_published": 0}
    finally:
        revived.terminate()
        revived.wait(timeout=10)
    with deps.ledger.transaction() as tx:
        published = [m.attributes["ce-subject"] for m in tx.scalars(select(BusMessage))
                     if m.attributes.get("ce-type") == "ctflow.training.requested.v1"]
    assert sorted(published) == sorted(r.id for r in runs)
