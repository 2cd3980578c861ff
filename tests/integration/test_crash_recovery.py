"""A process killed with SIGKILL right after commit loses nothing.

On the embedded bus an event is published in the commit that writes it, so there is
no window: the kill finds every event already on the bus. With Pub/Sub (the emulator)
the publish follows the commit: the kill leaves the outbox rows unsent, and the
restarted process's reconcile publishes each exactly once.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from ctflow.dataset_drop import drop_folder
from ctflow.ledger.tables import BusDelivery, BusMessage, OutboxMessage, Run
from ctflow.topology import EVENTS_TOPIC
from tests.support import free_port, gcs_event_request, push_request, start_service

REQUESTED = "ctflow.training.requested.v1"


def _start(settings, port: int, app: str = "hparam_consumer.app:app", **env: str) -> subprocess.Popen:  # type: ignore[type-arg]
    environment = {
        "CTFLOW_HOME": str(settings.home),
        "CTFLOW_DATABASE_URL": settings.ledger_url,
        "CTFLOW_PIPELINES_DIR": str(settings.pipelines_dir),
        "CTFLOW_OUTBOX_GRACE_SECONDS": "0",
        **env,
    }
    proc, _, _ = start_service(app, environment, port, timeout=30)
    return proc


def _dataset_arrived(deps, listener, digits_folder) -> None:  # type: ignore[no-untyped-def]
    drop_folder(digits_folder, deps.pipelines.get("digits"), deps.blobs, "v1")
    h, b = gcs_event_request(deps.settings.bucket_dir, "datasets/digits/v1/_MANIFEST.json")
    assert listener.post("/", content=b, headers=h).json()["status"] == "processed"
    deps.relay.publish()  # the dataset event is not what these tests are about


def _kill_after_commit(deps, app: str, message_id: str, **env: str) -> tuple[int, tuple[dict, bytes], list[Run]]:  # type: ignore[no-untyped-def]
    """Deliver a 2-point sweep to a process that dies right after committing it; (port, request, its runs)."""
    port = free_port()
    request = push_request({"pipeline": "digits", "sweep": {"lr": [0.1, 0.01]}}, message_id)
    doomed = _start(deps.settings, port, app, CTFLOW_FAILPOINTS="after-commit", **env)
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"http://127.0.0.1:{port}/", content=request[1], headers=request[0], timeout=30)
    assert doomed.wait(timeout=10) == -9  # SIGKILL, not a clean exit
    with deps.ledger.transaction() as tx:
        runs = [r for r in tx.scalars(select(Run)) if r.trigger.get("message_id") == message_id]
    assert len(runs) == 2
    return port, request, runs


def _unsent(deps) -> list[OutboxMessage]:  # type: ignore[no-untyped-def]
    with deps.ledger.transaction() as tx:
        return list(tx.scalars(select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))))


def _redeliver_then_reconcile(deps, port: int, request, app: str, **env: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """Restart; Pub/Sub redelivers the unacknowledged message (a duplicate now); two reconcile ticks."""
    revived = _start(deps.settings, port, app, **env)
    try:
        again = httpx.post(f"http://127.0.0.1:{port}/", content=request[1], headers=request[0], timeout=30).json()
        assert again["status"] == "duplicate"
        return [httpx.post(f"http://127.0.0.1:{port}/reconcile", timeout=30).json() for _ in range(2)]
    finally:
        revived.terminate()
        revived.wait(timeout=10)


def test_embedded_bus_has_every_committed_event_when_the_process_dies(deps, listener, digits_folder):
    """The kill comes after commit: both runs' events are already on the bus, owed to the job-launcher."""
    _dataset_arrived(deps, listener, digits_folder)
    port, request, runs = _kill_after_commit(deps, "hparam_consumer.app:app", "m-crash")
    assert _unsent(deps) == []
    with deps.ledger.transaction() as tx:
        published = {
            m.attributes["ce-subject"]: m.id
            for m in tx.scalars(select(BusMessage))
            if m.attributes.get("ce-type") == REQUESTED
        }
        owed = tx.execute(select(BusDelivery.message_pk, BusDelivery.subscription, BusDelivery.status)).all()
    assert sorted(published) == sorted(r.id for r in runs)
    assert {(pk, "job-launcher-push", "pending") for pk in published.values()} <= set(owed)
    ticks = _redeliver_then_reconcile(deps, port, request, "hparam_consumer.app:app")
    assert [tick["outbox_published"] for tick in ticks] == [0, 0]


@pytest.fixture
def events_subscription(pubsub_host: str) -> Iterator[tuple[str, str]]:
    """A fresh emulator project with the events topic and a pull subscription on it: (project, subscription)."""
    from google.cloud import pubsub_v1

    project = f"crash-{uuid.uuid4().hex[:8]}"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=publisher.topic_path(project, EVENTS_TOPIC)).name
    subscription = subscriber.create_subscription(
        name=subscriber.subscription_path(project, "crash-test-pull"), topic=topic
    ).name
    yield project, subscription
    subscriber.close()


def test_pubsub_bus_publishes_what_a_killed_process_left_unsent_after_restart(
    deps, listener, digits_folder, events_subscription
):
    """Runs committed before the kill survive; after restart, reconcile publishes their events once."""
    from google.cloud import pubsub_v1

    project, subscription = events_subscription
    app, env = "tests.integration.pubsub_bus_app:app", {"CTFLOW_TEST_PUBSUB_PROJECT": project}
    _dataset_arrived(deps, listener, digits_folder)
    port, request, runs = _kill_after_commit(deps, app, "m-crash-pubsub", **env)
    assert sorted(u.event_type for u in _unsent(deps)) == [REQUESTED, REQUESTED]

    ticks = _redeliver_then_reconcile(deps, port, request, app, **env)
    assert [tick["outbox_published"] for tick in ticks] == [2, 0]
    assert _unsent(deps) == []
    with pubsub_v1.SubscriberClient() as subscriber:
        pulled = subscriber.pull(subscription=subscription, max_messages=10, timeout=30).received_messages
    assert sorted(
        m.message.attributes["ce-subject"] for m in pulled if m.message.attributes["ce-type"] == REQUESTED
    ) == sorted(r.id for r in runs)
