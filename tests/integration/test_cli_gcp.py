"""`ctflow drop` and `ctflow publish` against a gcp deployment (the GCS and Pub/Sub emulators).

Run as a user runs them: a separate process whose environment names only the mode, the
project and the bucket; no database URL, OIDC audience or invoker identities.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from ctflow.sample_data import write_digits_dataset
from ctflow.topology import HPARAMS_TOPIC
from tests.integration.emulators import gcs_emulator
from tests.support import REPO_ROOT

BUCKET = "ctflow-cli"
_SERVICE_ONLY = ("CTFLOW_DATABASE_URL", "CTFLOW_OIDC_AUDIENCE", "CTFLOW_ALLOWED_INVOKERS", "CTFLOW_HOME")


@pytest.fixture(scope="module")
def gcs_url() -> Iterator[str]:
    with gcs_emulator(BUCKET) as url:
        yield url


def _ctflow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in _SERVICE_ONLY}
    return subprocess.run(
        [sys.executable, "-m", "ctflow.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**environment, "CTFLOW_MODE": "gcp", **env},
        timeout=120,
    )


def test_drop_uploads_a_version_to_the_bucket_marker_last(tmp_path, gcs_url):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    folder = write_digits_dataset(tmp_path / "digits")
    done = _ctflow(
        "drop",
        str(folder),
        "--pipeline",
        "digits",
        "--version",
        "cli1",
        "--bucket",
        BUCKET,
        CTFLOW_GCP_PROJECT="ctflow-test",
        STORAGE_EMULATOR_HOST=gcs_url,
    )
    assert done.returncode == 0, done.stderr
    client = storage.Client(
        project="ctflow-test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_url}
    )
    names = {blob.name for blob in client.list_blobs(BUCKET, prefix="datasets/digits/cli1/")}
    assert "datasets/digits/cli1/_MANIFEST.json" in names and len(names) == len(list(folder.iterdir()))
    assert json.loads(done.stdout)["uri"] == f"gs://{BUCKET}/datasets/digits/cli1/"


def test_drop_without_a_bucket_says_what_is_missing(tmp_path):
    folder = write_digits_dataset(tmp_path / "digits")
    done = _ctflow("drop", str(folder), "--pipeline", "digits", CTFLOW_GCP_PROJECT="ctflow-test")
    assert done.returncode == 1 and "gcp mode needs a bucket" in done.stderr


def test_publish_sends_the_message_to_the_hparams_topic(pubsub_host):
    from google.cloud import pubsub_v1

    project = f"cli-{uuid.uuid4().hex[:8]}"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=publisher.topic_path(project, HPARAMS_TOPIC)).name
    subscription = subscriber.create_subscription(
        name=subscriber.subscription_path(project, "cli-pull"), topic=topic
    ).name
    done = _ctflow(
        "publish",
        "--pipeline",
        "digits",
        "--hparams",
        '{"lr": 0.01}',
        "--sweep",
        '{"epochs": [1, 2]}',
        CTFLOW_GCP_PROJECT=project,
        PUBSUB_EMULATOR_HOST=pubsub_host,
    )
    assert done.returncode == 0, done.stderr
    [received] = subscriber.pull(subscription=subscription, max_messages=5, timeout=30).received_messages
    subscriber.close()
    assert received.message.message_id == json.loads(done.stdout)["message_id"]
    assert json.loads(received.message.data) == {
        "pipeline": "digits",
        "hyperparameters": {"lr": 0.01},
        "sweep": {"epochs": [1, 2]},
    }
    assert dict(received.message.attributes) == {"ctflow-trigger": "cli"}


def test_the_embedded_stack_refuses_gcp_mode():
    done = _ctflow("up", CTFLOW_GCP_PROJECT="ctflow-test")
    assert done.returncode == 1 and "embedded stack only" in done.stderr
