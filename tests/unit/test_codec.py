"""Transport codecs: every delivery form decodes to the same Event; bad input raises MalformedRequest."""

from __future__ import annotations

import base64
import json

import pytest

from ctflow.codec import (
    MalformedRequest,
    decode_request,
    parse_json,
    pubsub_message_data,
    push_envelope,
)
from ctflow.events import PUBSUB_MESSAGE_PUBLISHED, run_event, to_http_binary, to_pubsub, trace_id_for

EVENT = run_event("ctflow.training.requested.v1", "hparam-consumer", "digits-abc", {"run_id": "digits-abc"})


def test_binary_mode_roundtrip():
    """HTTP binary mode keeps attributes, extensions and JSON data."""
    headers, body = to_http_binary(EVENT)
    decoded = decode_request(headers, body)
    assert (decoded.type, decoded.id, decoded.subject, decoded.data) == (EVENT.type, EVENT.id, "digits-abc", EVENT.data)
    assert decoded.traceparent == EVENT.traceparent


def test_structured_mode():
    """application/cloudevents+json decodes the same event."""
    body = json.dumps(
        {
            "specversion": "1.0",
            **{k: v for k, v in EVENT.attributes().items() if k != "specversion"},
            "datacontenttype": "application/json",
            "data": EVENT.data,
        }
    ).encode()
    decoded = decode_request({"Content-Type": "application/cloudevents+json"}, body)
    assert decoded.id == EVENT.id and decoded.data == EVENT.data


def test_pubsub_binding_in_push_envelope():
    """A pushed message with ce- attributes is the CloudEvent it carries, whatever its messageId."""
    data, attributes = to_pubsub(EVENT)
    body = push_envelope(data, attributes, "12345", "2026-11-22T00:00:00Z", "projects/p/subscriptions/s")
    decoded = decode_request({"content-type": "application/json"}, body)
    assert decoded.id == EVENT.id and decoded.source == EVENT.source and decoded.data == EVENT.data


def test_plain_pushed_message_becomes_message_published_event():
    """A pushed message without ce- attributes looks like Eventarc's messagePublished, id = messageId."""
    body = push_envelope(b'{"pipeline": "digits"}', {"k": "v"}, "777", "t", "projects/p/subscriptions/hp")
    decoded = decode_request({}, body)
    assert decoded.type == PUBSUB_MESSAGE_PUBLISHED and decoded.id == "777"
    assert pubsub_message_data(decoded) == (b'{"pipeline": "digits"}', {"k": "v"}, "777")


@pytest.mark.parametrize(
    ("headers", "body", "fragment"),
    [
        ({}, b"{not json", "not valid JSON"),
        ({}, b"[]", "neither a CloudEvent"),
        ({}, json.dumps({"message": {"data": "***", "messageId": "1"}}).encode(), "base64"),
        ({}, json.dumps({"message": {"data": ""}}).encode(), "messageId"),
        ({"ce-specversion": "1.0", "ce-type": "t", "ce-id": "1"}, b"{}", "lacks required attribute\(s\): source"),
        (
            {},
            json.dumps(
                {
                    "message": {
                        "messageId": "1",
                        "attributes": {"ce-specversion": "1.0", "ce-type": "t"},
                        "data": base64.b64encode(b"{}").decode(),
                    }
                }
            ).encode(),
            "source, id",
        ),
    ],
)
def test_malformed_requests_say_why(headers, body, fragment):
    """Each malformation raises MalformedRequest with a readable reason."""
    with pytest.raises(MalformedRequest, match=fragment):
        decode_request(headers, body)


def test_traceparent_carries_the_run_trace():
    """Every event of a run shares the run's trace id."""
    other = run_event("ctflow.training.started.v1", "job-launcher", "digits-abc", {})
    assert EVENT.traceparent.split("-")[1] == other.traceparent.split("-")[1] == trace_id_for("digits-abc")


_NAN_DATA = b'{"lr": NaN}'


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, b'{"message": {"data": "", "messageId": "1"}, "subscription": "s", "x": Infinity}'),  # push envelope
        ({}, b'{"message": {"data": "", "messageId": "1"}, "subscription": "s", "x": 1e400}'),
        ({**to_http_binary(EVENT)[0]}, _NAN_DATA),  # binary mode data
        (
            {"content-type": "application/cloudevents+json"},  # structured mode: the CloudEvents library parses it
            b'{"specversion": "1.0", "type": "t", "source": "//s", "id": "1", "data": {"lr": NaN}}',
        ),
        ({}, push_envelope(_NAN_DATA, to_pubsub(EVENT)[1], "1", "t", "projects/p/subscriptions/s")),  # Pub/Sub binding
    ],
)
def test_values_json_has_not_are_malformed_whatever_the_delivery_form(headers, body):
    """Python would read NaN, Infinity and 1e400; PostgreSQL's json type would not store them, so such an event
    would fail its transaction on every redelivery. It is refused as malformed: a dead letter."""
    with pytest.raises(MalformedRequest, match="not valid JSON"):
        decode_request(headers, body)


def test_hyperparameter_message_data_is_parsed_as_strictly():
    body = push_envelope(b'{"pipeline": "digits", "hyperparameters": {"lr": NaN}}', {}, "9", "t", "s")
    data, _, _ = pubsub_message_data(decode_request({}, body))
    with pytest.raises(MalformedRequest, match="NaN is not a JSON value"):
        parse_json(data, "hyperparameter message data")


_DEEP = b"[" * 100_000 + b"]" * 100_000  # under the 1 MiB body limit


@pytest.mark.parametrize(
    "headers", [{}, {"content-type": "application/cloudevents+json"}, {**to_http_binary(EVENT)[0]}]
)
def test_json_nested_too_deeply_is_malformed_not_a_crash(headers):
    """Python's decoder gives up with RecursionError, which is no ValueError: left alone it was a 503 each time."""
    with pytest.raises(MalformedRequest, match="nested too deeply"):
        decode_request(headers, _DEEP)
