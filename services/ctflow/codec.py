"""Transport codecs: HTTP and Pub/Sub messages to and from Events.

Inbound, one request may be: a CloudEvent in HTTP binary or structured mode (Eventarc
delivers both GCS and `messagePublished` events this way), or a Pub/Sub push envelope.
A push envelope whose attributes carry `ce-specversion` is a CloudEvent in the Pub/Sub
binding (how ctflow's own events travel); any other pushed message becomes the same
`messagePublished` event Eventarc would have sent, with the messageId as its id, so
handlers see one shape whichever way the message came.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat

from . import strict_json
from .events import PUBSUB_MESSAGE_PUBLISHED, Event

_FORMAT = JSONFormat()
_CORE = {"specversion", "type", "source", "id", "subject", "time", "datacontenttype", "dataschema"}
CE_PREFIX = "ce-"


class MalformedRequest(ValueError):
    """The request is not a CloudEvent or Pub/Sub push message; the text says why."""


def decode_request(headers: Mapping[str, str], body: bytes) -> Event:
    """Turn one inbound HTTP request into an Event, whatever its delivery form."""
    lower = {k.lower(): v for k, v in headers.items()}
    if _is_cloudevent(lower):
        return _from_cloudevent_http(lower, body)
    doc = parse_json(body, "request body")
    if isinstance(doc, dict) and isinstance(doc.get("message"), dict):
        return decode_push_envelope(doc)
    raise MalformedRequest(
        "request is neither a CloudEvent (no ce-specversion header, not application/cloudevents+json) "
        'nor a Pub/Sub push envelope ({"message": {...}, "subscription": ...})'
    )


def decode_cloudevent(headers: Mapping[str, str], body: bytes) -> Event:
    """One CloudEvent in HTTP binary or structured mode (and nothing else)."""
    lower = {k.lower(): v for k, v in headers.items()}
    if not _is_cloudevent(lower):
        raise MalformedRequest(
            "request is not a CloudEvent: no ce-specversion header, "
            "and its content type is not application/cloudevents+json"
        )
    return _from_cloudevent_http(lower, body)


def _is_cloudevent(lower_headers: Mapping[str, str]) -> bool:
    return f"{CE_PREFIX}specversion" in lower_headers or lower_headers.get("content-type", "").startswith(
        "application/cloudevents+json"
    )


def decode_push_envelope(envelope: Mapping[str, Any]) -> Event:
    message = envelope["message"]
    attributes = message.get("attributes") or {}
    message_id = message.get("messageId") or message.get("message_id")
    if not isinstance(attributes, dict) or not message_id:
        raise MalformedRequest("Pub/Sub push message lacks a messageId or has non-object attributes")
    data = _b64(message.get("data", ""))
    if f"{CE_PREFIX}specversion" in attributes:
        return _from_pubsub_binding(attributes, data)
    subscription = str(envelope.get("subscription") or "unknown-subscription")
    return Event(
        type=PUBSUB_MESSAGE_PUBLISHED,
        source=f"//pubsub.googleapis.com/{subscription}",
        id=str(message_id),
        time=message.get("publishTime") or message.get("publish_time"),
        data={"message": dict(message), "subscription": subscription},
    )


def pubsub_message_data(event: Event) -> tuple[bytes, dict[str, str], str]:
    """(data, attributes, messageId) of a `messagePublished` event's message."""
    message = _pubsub_message(event)
    return _b64(message.get("data", "")), dict(message.get("attributes") or {}), pubsub_message_id(event)


def pubsub_message_id(event: Event) -> str:
    """The messageId of a `messagePublished` event's message (the same by push or by Eventarc)."""
    message = _pubsub_message(event)
    return str(message.get("messageId") or message.get("message_id") or event.id)


def _pubsub_message(event: Event) -> dict[str, Any]:
    message = (event.data or {}).get("message") if isinstance(event.data, dict) else None
    if not isinstance(message, dict):
        raise MalformedRequest('messagePublished event data has no "message" object')
    return message


def push_envelope(
    data: bytes, attributes: Mapping[str, str], message_id: str, publish_time: str, subscription: str
) -> bytes:
    """The JSON body Pub/Sub POSTs to a push endpoint."""
    return json.dumps(
        {
            "message": {
                "data": base64.b64encode(data).decode(),
                "attributes": dict(attributes),
                "messageId": message_id,
                "message_id": message_id,
                "publishTime": publish_time,
                "publish_time": publish_time,
            },
            "subscription": subscription,
        }
    ).encode()


_REQUIRED = ("id", "source", "type", "specversion")


def _check_required(headers: Mapping[str, str], body: bytes) -> None:
    """Refuse what the CloudEvents SDK would make up or choke on: it gives an event without an id a
    random one (so every redelivery would be a new event), and raises AttributeError on a
    structured-mode body that is JSON but not an object."""
    if f"{CE_PREFIX}specversion" in headers:  # binary mode: the attributes are headers
        present = {name for name in _REQUIRED if str(headers.get(f"{CE_PREFIX}{name}", "")).strip()}
    else:  # structured mode: the attributes are members of the JSON object
        doc = parse_json(body, "structured-mode CloudEvent")
        if not isinstance(doc, dict):
            raise MalformedRequest(f"a structured-mode CloudEvent is a JSON object, not {_json_kind(doc)}")
        present = {name for name in _REQUIRED if isinstance(doc.get(name), str) and doc[name].strip()}
    missing = [name for name in _REQUIRED if name not in present]
    if missing:
        raise MalformedRequest(f"CloudEvent lacks required attribute(s): {', '.join(missing)}")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _from_cloudevent_http(headers: dict[str, str], body: bytes) -> Event:
    _check_required(headers, body)
    try:
        ce = from_http(HTTPMessage(headers=headers, body=body), _FORMAT)
    except (BaseCloudEventException, ValueError, TypeError, KeyError) as exc:
        raise MalformedRequest(f"invalid CloudEvent: {exc}") from None
    except RecursionError:
        raise MalformedRequest("invalid CloudEvent: nested too deeply to read") from None
    return _from_attributes(ce.get_attributes(), ce.get_data())


def _from_pubsub_binding(attributes: Mapping[str, str], data: bytes) -> Event:
    attrs = {k[len(CE_PREFIX) :]: v for k, v in attributes.items() if k.startswith(CE_PREFIX)}
    missing = [a for a in ("type", "source", "id") if not attrs.get(a)]
    if missing:
        raise MalformedRequest(f"CloudEvent in Pub/Sub message lacks required attribute(s): {', '.join(missing)}")
    return _from_attributes(attrs, parse_json(data, "CloudEvent data") if data else None)


def _from_attributes(attrs: Mapping[str, Any], data: Any) -> Event:
    if isinstance(data, bytes | bytearray):
        data = parse_json(bytes(data), "CloudEvent data")
    else:  # structured mode: the CloudEvents library decoded it
        try:
            strict_json.require_finite(data, "CloudEvent data")
        except strict_json.InvalidJson as exc:
            raise MalformedRequest(str(exc)) from None
    time = attrs.get("time")
    if isinstance(time, datetime):
        time = time.isoformat().replace("+00:00", "Z")
    return Event(
        type=str(attrs["type"]),
        source=str(attrs["source"]),
        id=str(attrs["id"]),
        subject=attrs.get("subject"),
        time=time,
        data=data,
        extensions={k: str(v) for k, v in attrs.items() if k not in _CORE},
    )


def parse_json(raw: bytes, what: str) -> Any:
    """Strict JSON (ctflow.strict_json); MalformedRequest naming `what` otherwise."""
    try:
        return strict_json.parse_json(raw, what)
    except strict_json.InvalidJson as exc:
        raise MalformedRequest(str(exc)) from None


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise MalformedRequest("Pub/Sub message data is not valid base64") from None
