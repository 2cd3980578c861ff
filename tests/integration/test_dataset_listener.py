"""dataset-listener: commit markers make dataset versions and `requested` runs, exactly once."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
from sqlalchemy import func, select

from ctflow.dataset_drop import drop_folder
from ctflow.intake import Intake
from ctflow.ledger import runs
from ctflow.ledger.tables import DeadLetter, OutboxMessage, Run
from ctflow.service import handler_table
from tests.support import gcs_event_request, replaying, serving

MARKER = "datasets/digits/v1/_MANIFEST.json"


def _drop(deps, folder, version="v1"):  # type: ignore[no-untyped-def]
    return drop_folder(folder, deps.pipelines.get("digits"), deps.blobs, version)


def _count(deps, model) -> int:  # type: ignore[no-untyped-def]
    with deps.ledger.transaction() as tx:
        return tx.scalar(select(func.count()).select_from(model))


def test_marker_creates_requested_run_with_generation_manifest_and_timeline(deps, listener, digits_folder):
    """The marker's event yields one requested run recording generation, manifest hash and timeline."""
    dropped = _drop(deps, digits_folder)
    headers, body = gcs_event_request(deps.settings.bucket_dir, MARKER)
    answer = listener.post("/", content=body, headers=headers).json()
    assert answer["status"] == "processed"
    [run_id] = answer["run_ids"]
    with deps.ledger.transaction() as tx:
        run = tx.get(Run, run_id)
        assert run.state == "requested" and run.dataset_version == "v1"
        assert run.dataset["manifest_sha256"] == dropped["manifest_sha256"]
        assert run.dataset["generation"] == json.loads(body)["generation"]
        assert run.trigger["kind"] == "dataset"
        [row] = tx.scalars(select(OutboxMessage)).all()
        assert row.event_type == "ctflow.dataset.arrived.v1" and row.attributes["ce-subject"] == run_id
    with deps.ledger.transaction() as tx:
        names = [t.name for t in runs.timeline(tx, run_id)]
    assert names == ["requested", "google.cloud.storage.object.v1.finalized", "ctflow.dataset.arrived.v1"]


def test_files_before_their_marker_do_nothing(deps, listener, digits_folder):
    """A data file's event is acknowledged and ignored: no run, no dead letter."""
    _drop(deps, digits_folder)
    headers, body = gcs_event_request(deps.settings.bucket_dir, "datasets/digits/v1/train.npz")
    assert listener.post("/", content=body, headers=headers).json()["status"] == "ignored"
    assert _count(deps, Run) == 0 and _count(deps, DeadLetter) == 0


def test_three_concurrent_deliveries_make_one_run(deps, digits_folder):
    """Same event id x3, and the same generation under new event ids x3: exactly one run."""
    from dataset_listener.app import create_app

    _drop(deps, digits_folder)
    same_id = [gcs_event_request(deps.settings.bucket_dir, MARKER)] * 3
    new_ids = [gcs_event_request(deps.settings.bucket_dir, MARKER, event_id=f"other-{i}") for i in range(3)]
    app = create_app()
    app.state.deps = deps
    with serving(app) as url, ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(lambda req: httpx.post(url, headers=req[0], content=req[1], timeout=30), same_id + new_ids)
        )
    assert all(a.status_code == 200 for a in answers)
    statuses = sorted(a.json()["status"] for a in answers)
    assert statuses == ["duplicate"] * 5 + ["processed"]
    assert _count(deps, Run) == 1 and _count(deps, OutboxMessage) == 1


def test_checksum_mismatch_is_dead_lettered_then_replayed_after_fix(deps, listener, digits_folder):
    """A corrupted file dead-letters the version with a clear reason; replay after repair succeeds."""
    _drop(deps, digits_folder)
    data_file = deps.settings.bucket_dir / "datasets/digits/v1/train.npz"
    good = data_file.read_bytes()
    data_file.write_bytes(good[:-10] + b"0123456789")
    headers, body = gcs_event_request(deps.settings.bucket_dir, MARKER)
    answer = listener.post("/", content=body, headers=headers).json()
    assert answer["status"] == "rejected"
    assert "train.npz" in answer["detail"] and "sha256" in answer["detail"]
    letter_id = answer["dead_letter_id"]
    # A redelivery of the same bad event is a duplicate, not a second dead letter.
    assert listener.post("/", content=body, headers=headers).json()["status"] == "duplicate"
    assert _count(deps, DeadLetter) == 1

    data_file.write_bytes(good)
    with replaying(deps, letter_id):
        replayed = listener.post("/", content=body, headers={**headers, "ctflow-replay-of": letter_id}).json()
    assert replayed["status"] == "processed"
    with deps.ledger.transaction() as tx:
        letter = tx.get(DeadLetter, letter_id)
        assert letter.status == "replayed" and letter.request["body"] == body.decode()
    assert _count(deps, Run) == 1


def test_bad_object_names_and_unknown_prefixes_are_dead_letters(deps, listener, digits_folder):
    """'..' in an object name, a marker outside every pipeline prefix, a nested marker: 2xx + reason."""
    _drop(deps, digits_folder)
    cases = {
        "datasets/digits/../../etc/_MANIFEST.json": "'..'",
        "elsewhere/v1/_MANIFEST.json": "no pipeline's dataset prefix",
        "datasets/digits/v1/deeper/_MANIFEST.json": "must sit directly",
    }
    for i, (name, expected) in enumerate(cases.items()):
        headers, body = gcs_event_request(deps.settings.bucket_dir, MARKER, event_id=f"bad-{i}")
        doc = json.loads(body)
        doc["name"] = name
        response = listener.post("/", content=json.dumps(doc), headers=headers)
        assert response.status_code == 200
        assert response.json()["status"] == "rejected" and expected in response.json()["detail"], name
    assert _count(deps, DeadLetter) == len(cases) and _count(deps, Run) == 0


def test_manifest_paths_leaving_the_version_folder_are_refused(deps, listener, digits_folder):
    """A manifest naming ../ or absolute paths is dead-lettered, never read."""
    _drop(deps, digits_folder)
    marker = deps.settings.bucket_dir / MARKER
    doc = json.loads(marker.read_text())
    doc["files"][0]["path"] = "../v0/train.npz"
    marker.write_text(json.dumps(doc))
    headers, body = gcs_event_request(deps.settings.bucket_dir, MARKER)
    answer = listener.post("/", content=body, headers=headers).json()
    assert answer["status"] == "rejected" and "leaves its dataset folder" in answer["detail"]


class HeldBucket:
    """The bucket, but reading a data file waits until the test lets it go."""

    def __init__(self, blobs) -> None:  # type: ignore[no-untyped-def]
        self.blobs, self.reading, self.release = blobs, threading.Event(), threading.Event()

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.blobs, name)

    def open(self, name: str):  # type: ignore[no-untyped-def]
        self.reading.set()
        assert self.release.wait(10)
        return self.blobs.open(name)


def test_files_are_verified_outside_the_ledger_transaction(deps, digits_folder):
    """While the listener hashes a dataset, other services' ledger writes go through (SQLite's one writer too)."""

    _drop(deps, digits_folder)
    held = HeldBucket(deps.blobs)
    intake = Intake("dataset-listener", handler_table("dataset-listener"), replace(deps, blobs=held))
    with ThreadPoolExecutor(2) as pool:
        arriving = pool.submit(intake.receive, *gcs_event_request(deps.settings.bucket_dir, MARKER))
        assert held.reading.wait(10)

        def write() -> None:
            with deps.ledger.transaction() as tx:
                runs.create(
                    tx,
                    run_id="digits-meanwhile",
                    pipeline="digits",
                    trigger={"kind": "test"},
                    hyperparameters={},
                    service="test",
                )

        pool.submit(write).result(timeout=5)  # would wait for the listener if it hashed in its transaction
        held.release.set()
        assert arriving.result(10).status == "processed"
    assert _count(deps, Run) == 2


def test_a_redelivery_is_a_duplicate_without_reading_the_dataset_again(deps, listener, digits_folder):

    _drop(deps, digits_folder)
    request = gcs_event_request(deps.settings.bucket_dir, MARKER)
    assert listener.post("/", headers=request[0], content=request[1]).json()["status"] == "processed"
    held = HeldBucket(deps.blobs)  # never released: reading a file would fail the test
    answer = Intake("dataset-listener", handler_table("dataset-listener"), replace(deps, blobs=held)).receive(*request)
    assert answer.status == "duplicate" and not held.reading.is_set()


def test_an_events_bucket_and_generation_are_checked_against_the_object(deps, listener, digits_folder):
    """The event only says which object to look at: another bucket is refused, and a generation the marker
    does not have (stale, or made up) starts no run; the object's own generation is what is recorded."""
    _drop(deps, digits_folder)
    headers, body = gcs_event_request(deps.settings.bucket_dir, MARKER, event_id="real")
    assert listener.post("/", content=body, headers=headers).json()["status"] == "processed"

    headers, body = gcs_event_request(deps.settings.bucket_dir, MARKER, event_id="other-gen", generation="12345")
    answer = listener.post("/", content=body, headers=headers).json()
    assert answer["status"] == "ignored" and "not 12345 as the event says" in answer["detail"]

    headers, body = gcs_event_request(deps.settings.bucket_dir, MARKER, "someone-elses-bucket", event_id="bucket")
    answer = listener.post("/", content=body, headers=headers).json()
    assert answer["status"] == "rejected" and "datasets are read from 'local-bucket' only" in answer["detail"]
    assert _count(deps, Run) == 1 and _count(deps, DeadLetter) == 1
