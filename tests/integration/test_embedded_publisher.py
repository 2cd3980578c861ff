"""The embedded bus's publish endpoint: a CloudEvent POSTed by a process outside the stack
(a trainer's report) is published on the events topic, owed to every subscriber of its type."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import select

from ctflow import events
from ctflow.embedded.publisher import create_publisher_app
from ctflow.events import Event, to_http_binary
from ctflow.ledger.tables import BusDelivery, BusMessage

REPORT = Event(
    type=events.TRAINING_COMPLETED,
    source=events.TRAINER_SOURCE,
    id="training-completed-digits-1",
    subject="digits-1",
    data={"run_id": "digits-1", "status": "succeeded"},
)


def _published(deps) -> list[tuple[dict, bytes, list[str]]]:  # type: ignore[no-untyped-def]
    with deps.ledger.transaction() as tx:
        return [
            (
                m.attributes,
                m.data,
                sorted(tx.scalars(select(BusDelivery.subscription).where(BusDelivery.message_pk == m.id))),
            )
            for m in tx.scalars(select(BusMessage).order_by(BusMessage.id))
        ]


def test_a_cloudevent_is_published_to_every_subscriber_of_its_type(deps):
    with TestClient(create_publisher_app(deps.bus, deps.settings.max_request_bytes)) as client:
        headers, body = to_http_binary(REPORT)
        answer = client.post("/topics/ctflow-events", content=body, headers=headers)
        again = client.post("/topics/ctflow-events", content=body, headers=headers)  # a sender's retry
    assert answer.status_code == 200 and again.status_code == 200
    assert answer.json()["message_id"] != again.json()["message_id"]  # two messages, one CloudEvent id
    (attributes, data, subscriptions), _ = _published(deps)
    assert attributes["ce-id"] == REPORT.id and attributes["ce-source"] == REPORT.source
    assert attributes["ce-type"] == events.TRAINING_COMPLETED and json.loads(data) == REPORT.data
    assert subscriptions == ["completion-handler-push", "job-launcher-push"]


def test_structured_mode_is_accepted_too(deps):
    structured = {
        "specversion": "1.0",
        "type": REPORT.type,
        "source": REPORT.source,
        "id": REPORT.id,
        "subject": REPORT.subject,
        "datacontenttype": "application/json",
        "data": REPORT.data,
    }
    with TestClient(create_publisher_app(deps.bus, deps.settings.max_request_bytes)) as client:
        answer = client.post(
            "/topics/ctflow-events",
            content=json.dumps(structured),
            headers={"content-type": "application/cloudevents+json"},
        )
    assert answer.status_code == 200
    [(attributes, _, _)] = _published(deps)
    assert attributes["ce-id"] == REPORT.id


def test_what_is_not_a_cloudevent_or_not_a_topic_is_refused_and_nothing_published(deps):
    with TestClient(create_publisher_app(deps.bus, deps.settings.max_request_bytes)) as client:
        not_an_event = client.post(
            "/topics/ctflow-events", content=b'{"run_id": "x"}', headers={"content-type": "application/json"}
        )
        headers, body = to_http_binary(REPORT)
        unknown = client.post("/topics/elsewhere", content=body, headers=headers)
        too_big = [  # just over, and far over (once read as empty, then "not a CloudEvent")
            client.post("/topics/ctflow-events", content=b" " * size, headers=headers).status_code
            for size in (deps.settings.max_request_bytes + 1, 3 * deps.settings.max_request_bytes)
        ]
    assert not_an_event.status_code == 400 and "not a CloudEvent" in not_an_event.json()["error"]
    assert unknown.status_code == 404 and "ctflow-events" in unknown.json()["error"]
    assert too_big == [413, 413]
    assert _published(deps) == []


def test_the_report_uri_points_at_the_events_topic(deps):
    """Embedded trainers report to the stack's publish endpoint for the events topic (gcp: the Pub/Sub topic)."""
    from ctflow import bootstrap

    deps.settings.bus_url = "http://127.0.0.1:8123/"
    assert bootstrap.trainer_report_uri(deps.settings) == "http://127.0.0.1:8123/topics/ctflow-events"
    gcp = deps.settings.model_copy(update={"mode": "gcp", "gcp_project": "p"})
    assert bootstrap.trainer_report_uri(gcp) == "pubsub://projects/p/topics/ctflow-events"
