"""Requests that look like CloudEvents but cannot be one are dead letters keyed on their content, never a
fresh event per redelivery and never a 503 that Pub/Sub and Eventarc would retry for ever."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from ctflow.ledger.tables import DeadLetter, Run
from tests.support import gcs_event_request

MARKER = "datasets/digits/v1/_MANIFEST.json"
STRUCTURED = {"content-type": "application/cloudevents+json"}


def _count(deps, model) -> int:  # type: ignore[no-untyped-def]
    with deps.ledger.reading() as tx:
        return tx.scalar(select(func.count()).select_from(model))


def test_an_event_without_an_id_is_one_dead_letter_however_often_it_comes(deps, listener, digits_folder):
    """Binary mode without ce-id: the SDK would invent an id per delivery (3 deliveries, 3 runs); it is one
    letter whose reason names the attribute, and no run."""
    from ctflow.dataset_drop import drop_folder

    drop_folder(digits_folder, deps.pipelines.get("digits"), deps.blobs, "v1")
    headers, body = gcs_event_request(deps.settings.bucket_dir, MARKER)
    del headers["ce-id"]
    answers = [listener.post("/", content=body, headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["status"] for a in answers] == ["rejected", "duplicate", "duplicate"]
    assert "lacks required attribute(s): id" in answers[0].json()["detail"]
    assert _count(deps, Run) == 0 and _count(deps, DeadLetter) == 1


@pytest.mark.parametrize("body", [b"[1]", b"1", b'"x"', b"null", b"true"])
def test_a_structured_mode_body_that_is_not_an_object_is_a_dead_letter(deps, listener, body):
    """Valid JSON, but not a CloudEvent object: 200 and a letter saying what it is, not 503 for ever."""
    answer = listener.post("/", content=body, headers=STRUCTURED)
    assert answer.status_code == 200 and answer.json()["status"] == "rejected"
    assert "is a JSON object, not" in answer.json()["detail"]
    assert listener.post("/", content=body, headers=STRUCTURED).json()["status"] == "duplicate"


def test_a_structured_mode_event_without_an_id_is_a_dead_letter(deps, listener):
    """Ten id-less events with ten bodies are ten letters; each one's redelivery is a duplicate."""
    for n in range(10):
        body = json.dumps({"specversion": "1.0", "type": "x.y", "source": "//s", "data": {"n": n}}).encode()
        assert listener.post("/", content=body, headers=STRUCTURED).json()["status"] == "rejected"
        assert listener.post("/", content=body, headers=STRUCTURED).json()["status"] == "duplicate"
    assert _count(deps, DeadLetter) == 10
