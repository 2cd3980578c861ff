"""The completion report: event shape, HTTP retries, Pub/Sub attributes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ctflow.events import to_http_binary, to_structured
from ctflow_trainer.report import EVENT_SOURCE, EVENT_TYPE, build_event, deliver
from tests.support import recording_server

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _event(run_id: str = "run-42", **data: object):  # type: ignore[no-untyped-def]
    body = {"run_id": run_id, "pipeline": "digits", "status": "succeeded", "error": None, **data}
    return build_event(body, traceparent=TRACEPARENT, now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


def test_event_attributes_follow_the_contract() -> None:
    """id is deterministic per run, subject is the run id, traceparent rides along."""
    event = _event()
    document = json.loads(to_structured(event))  # completion.json
    assert {k: v for k, v in document.items() if k != "data"} == {
        "specversion": "1.0",
        "id": "training-completed-run-42",
        "source": EVENT_SOURCE,
        "type": EVENT_TYPE,
        "subject": "run-42",
        "time": "2026-01-02T03:04:05.000Z",
        "datacontenttype": "application/json",
        "traceparent": TRACEPARENT,
    }
    assert EVENT_TYPE == "ctflow.training.completed.v1"
    assert document["data"]["run_id"] == "run-42"


def test_traceparent_is_absent_when_not_given() -> None:
    """No CTFLOW_TRACEPARENT, no traceparent extension (not an empty one)."""
    event = build_event({"run_id": "r"}, traceparent=None)
    assert "traceparent" not in event.attributes() and "ce-traceparent" not in to_http_binary(event)[0]


def test_http_headers_percent_encode_unsafe_characters() -> None:
    """Header values are encoded per the CloudEvents HTTP binding (space, quote, %, non-ASCII)."""
    headers, _ = to_http_binary(_event(run_id='a b"%é'))
    assert headers["ce-subject"] == "a%20b%22%25%C3%A9"
    assert headers["content-type"] == "application/json"
    assert "ce-datacontenttype" not in headers


def test_http_delivery_retries_server_errors_then_succeeds() -> None:
    """503 and 500 are retried with growing back-off until the receiver accepts."""
    sleeps: list[float] = []
    with recording_server([503, 500, 204], path="/events") as (url, recorder):
        assert deliver(_event(), url, sleep=sleeps.append) is True
    assert len(recorder.requests) == 3
    assert sleeps == [0.5, 1.0]
    headers, body = recorder.requests[-1]
    assert headers["ce-id"] == "training-completed-run-42" and json.loads(body)["status"] == "succeeded"


def test_http_delivery_does_not_retry_a_client_error() -> None:
    """A 400 is permanent: one attempt, reported as not delivered, no exception."""
    with recording_server([400], path="/events") as (url, recorder):
        assert deliver(_event(), url, sleep=lambda s: None) is False
    assert len(recorder.requests) == 1


def test_http_delivery_gives_up_at_the_deadline_without_raising() -> None:
    """An unreachable receiver is retried until the deadline, then given up quietly."""
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    assert (
        deliver(
            _event(),
            "http://127.0.0.1:9/",
            deadline_seconds=30.0,
            sleep=sleep,
            clock=lambda: now[0],
        )
        is False
    )
    assert sleeps == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        8.0,
    ]  # the next 8 s wait would pass the 30 s deadline


class _FakePublisher:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, dict[str, str]]] = []

    def publish(self, topic: str, data: bytes, **attributes: str):  # type: ignore[no-untyped-def]
        self.published.append((topic, data, attributes))

        class _Future:
            def result(self, timeout: float | None = None) -> str:
                return "message-1"

        return _Future()


def test_pubsub_delivery_uses_the_cloudevents_pubsub_binding() -> None:
    """Data is the JSON payload; ce-* attributes carry the event attributes; content-type is set."""
    publisher = _FakePublisher()
    assert deliver(_event(), "pubsub://projects/p1/topics/training", publisher=publisher) is True
    [(topic, data, attributes)] = publisher.published
    assert topic == "projects/p1/topics/training"
    assert json.loads(data)["run_id"] == "run-42"
    assert attributes == {
        "ce-specversion": "1.0",
        "ce-type": EVENT_TYPE,
        "ce-source": EVENT_SOURCE,
        "ce-id": "training-completed-run-42",
        "ce-subject": "run-42",
        "ce-time": "2026-01-02T03:04:05.000Z",
        "ce-traceparent": TRACEPARENT,
        "content-type": "application/json",
    }


@pytest.mark.parametrize("uri", ["pubsub://p1/training", "ftp://host/x"])
def test_a_malformed_report_uri_is_logged_not_raised(uri: str) -> None:
    """A bad CTFLOW_REPORT_URI never crashes the job: the report stays in completion.json."""
    assert deliver(_event(), uri, publisher=_FakePublisher()) is False


def test_no_report_uri_means_file_only() -> None:
    """Unset CTFLOW_REPORT_URI: nothing to deliver, which counts as done."""
    assert deliver(_event(), None) is True
