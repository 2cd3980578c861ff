"""The gcp adapters against real emulators: GCS for the bucket, Pub/Sub with a real push subscription.

The ledger is PostgreSQL, as in gcp mode. Together: a dataset dropped into the GCS
emulator is read and verified by the dataset-listener; a hyperparameter message
published to the Pub/Sub emulator is pushed to the hparam-consumer, whose
`training.requested` events come out on the events topic in the CloudEvents binding.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ctflow.blobstore.gcs import GcsBlobStore
from ctflow.bus.pubsub_bus import PubSubBus
from ctflow.bus.relay import OutboxRelay
from ctflow.dataset_drop import drop_folder
from ctflow.events import GCS_OBJECT_FINALIZED, Event, to_http_binary
from ctflow.ledger.tables import Run
from tests.integration.emulators import gcs_emulator
from tests.support import serving, wait_for

PROJECT = "ctflow-test"
BUCKET = "ctflow-data"


@pytest.fixture(scope="module")
def gcs_client() -> Iterator[object]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with gcs_emulator(BUCKET) as url:
        yield storage.Client(project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": url})


@pytest.fixture
def ledger_url(postgres_url: str) -> str:
    """gcp mode keeps its ledger in PostgreSQL."""
    return postgres_url


@pytest.fixture
def gcp_deps(deps, gcs_client, pubsub_host):  # type: ignore[no-untyped-def]
    """The same Dependencies a gcp-mode service gets, pointed at the emulators."""
    bus = PubSubBus(PROJECT)
    return replace(deps, blobs=GcsBlobStore(BUCKET, client=gcs_client), bus=bus, relay=OutboxRelay(deps.ledger, bus))


def _finalized(blob) -> tuple[dict[str, str], bytes]:  # type: ignore[no-untyped-def]
    """The CloudEvent Eventarc sends for a GCS object, from the emulator's real metadata."""
    event = Event(
        type=GCS_OBJECT_FINALIZED,
        source=f"//storage.googleapis.com/projects/_/buckets/{BUCKET}",
        id=f"gcs-{blob.name}-{blob.generation}",
        subject=f"objects/{blob.name}",
        data={"bucket": BUCKET, "name": blob.name, "generation": str(blob.generation), "size": str(blob.size)},
    )
    return to_http_binary(event)


def _arrive(gcp_deps, gcs_client, digits_folder, version: str):  # type: ignore[no-untyped-def]
    from dataset_listener.app import create_app

    drop_folder(digits_folder, gcp_deps.pipelines.get("digits"), gcp_deps.blobs, version)
    marker = gcs_client.bucket(BUCKET).get_blob(f"datasets/digits/{version}/_MANIFEST.json")
    app = create_app()
    app.state.deps = gcp_deps
    with TestClient(app) as listener:
        headers, body = _finalized(marker)
        return listener.post("/", content=body, headers=headers).json(), marker


def test_dataset_dropped_in_gcs_is_verified_and_recorded(gcp_deps, gcs_client, digits_folder):
    """The listener reads the manifest and files from GCS and records the real object generation."""
    answer, marker = _arrive(gcp_deps, gcs_client, digits_folder, "g1")
    assert answer["status"] == "processed"
    with gcp_deps.ledger.transaction() as tx:
        run = tx.get(Run, answer["run_ids"][0])
        assert run.dataset["generation"] == str(marker.generation)
        assert run.dataset["uri"] == f"gs://{BUCKET}/datasets/digits/g1/"


def test_corrupted_gcs_object_is_dead_lettered(gcp_deps, gcs_client, digits_folder):
    """A file overwritten after its manifest was written fails the checksum, with the file named."""
    drop_folder(digits_folder, gcp_deps.pipelines.get("digits"), gcp_deps.blobs, "g2")
    gcs_client.bucket(BUCKET).blob("datasets/digits/g2/train.npz").upload_from_string(b"not the data")
    from dataset_listener.app import create_app

    app = create_app()
    app.state.deps = gcp_deps
    with TestClient(app) as listener:
        headers, body = _finalized(gcs_client.bucket(BUCKET).get_blob("datasets/digits/g2/_MANIFEST.json"))
        answer = listener.post("/", content=body, headers=headers).json()
    assert answer["status"] == "rejected" and "train.npz" in answer["detail"]


def test_push_subscription_delivers_to_hparam_consumer_and_events_are_published(gcp_deps, gcs_client, digits_folder):
    """Publish to the emulator → push to the consumer → three runs → three CloudEvents on the events topic."""
    from google.cloud import pubsub_v1

    from hparam_consumer.app import create_app

    _arrive(gcp_deps, gcs_client, digits_folder, "g3")
    app = create_app()
    app.state.deps = gcp_deps
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    hparams, events = publisher.topic_path(PROJECT, "ctflow-hparams"), publisher.topic_path(PROJECT, "ctflow-events")
    for topic in (hparams, events):
        publisher.create_topic(name=topic)
    events_sub = subscriber.subscription_path(PROJECT, "test-events-pull")
    subscriber.create_subscription(name=events_sub, topic=events)
    with serving(app) as url:
        subscriber.create_subscription(
            request={
                "name": subscriber.subscription_path(PROJECT, "hparam-consumer-push"),
                "topic": hparams,
                "push_config": {"push_endpoint": url},
                "ack_deadline_seconds": 10,
            }
        )
        message = {"pipeline": "digits", "hyperparameters": {"epochs": 2}, "sweep": {"lr": [0.1, 0.01, 0.001]}}
        message_id = publisher.publish(hparams, json.dumps(message).encode(), **{"ctflow-trigger": "schedule"}).result()

        def three_runs():  # type: ignore[no-untyped-def]
            with gcp_deps.ledger.transaction() as tx:
                found = [r for r in tx.scalars(select(Run)) if r.trigger.get("message_id") == message_id]
            return found if len(found) == 3 else None

        runs = wait_for(three_runs, timeout=30)
    assert {r.trigger["kind"] for r in runs} == {"schedule"}
    received = []
    for _ in range(20):
        response = subscriber.pull(request={"subscription": events_sub, "max_messages": 10}, timeout=10)
        received += response.received_messages
        if response.received_messages:
            subscriber.acknowledge(
                request={"subscription": events_sub, "ack_ids": [m.ack_id for m in response.received_messages]}
            )
        if len([m for m in received if m.message.attributes["ce-type"] == "ctflow.training.requested.v1"]) >= 3:
            break
    requested = [m.message for m in received if m.message.attributes["ce-type"] == "ctflow.training.requested.v1"]
    assert sorted(m.attributes["ce-subject"] for m in requested) == sorted(r.id for r in runs)
    for m in requested:
        assert m.attributes["ce-specversion"] == "1.0" and m.attributes["ce-traceparent"].startswith("00-")
        assert json.loads(m.data)["run_id"] == m.attributes["ce-subject"]
