"""Dead letters: permanently bad input, kept whole with a reason a person understands."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from .tables import DeadLetter

# What a letter keeps of a body over the request limit: enough for a person to see what it
# was (the limit itself is kept whole, so a letter of an acceptable request can be replayed).
OVERSIZED_PREFIX = 64 * 1024
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-serverless-authorization"})


def stored_request(headers: Mapping[str, str], body: bytes, *, limit: int | None = None) -> dict[str, Any]:
    """The request as kept in a dead letter: everything but credentials.

    A body over `limit` (read only up to just past it) keeps a prefix, with its true size
    when the sender declared one (Content-Length).
    """
    oversized = limit is not None and len(body) > limit
    kept = body[:OVERSIZED_PREFIX] if oversized else body
    size = declared_size(headers) if oversized else None
    try:
        text, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode(), "base64"
    return {
        "headers": {k.lower(): v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS},
        "body": text,
        "encoding": encoding,
        "size": size if size is not None else len(body),
        "size_known": not oversized or size is not None,
        "truncated": len(kept) < (size if size is not None else len(body)),
    }


def declared_size(headers: Mapping[str, str]) -> int | None:
    """The Content-Length the sender declared, if any."""
    value = next((v for k, v in headers.items() if k.lower() == "content-length"), "")
    return int(value) if value.strip().isdigit() else None


def request_body(stored: Mapping[str, Any]) -> bytes:
    """The body of a stored request, as it was received (or the part that was kept)."""
    raw = stored["body"]
    return base64.b64decode(raw) if stored.get("encoding") == "base64" else raw.encode("utf-8")


def add(
    session: Session,
    *,
    consumer: str,
    source: str,
    event_id: str,
    event_type: str | None,
    reason: str,
    request: dict[str, Any],
) -> DeadLetter:
    letter = DeadLetter(
        id=str(uuid.uuid4()),
        consumer=consumer,
        source=source,
        event_id=event_id,
        event_type=event_type,
        reason=reason,
        request=request,
        status="open",
        replays=0,
    )
    session.add(letter)
    return letter


def get(session: Session, letter_id: str) -> DeadLetter | None:
    return session.get(DeadLetter, letter_id)


def listing(
    session: Session, *, consumer: str | None = None, status: str | None = None, limit: int = 100
) -> list[DeadLetter]:
    query = select(DeadLetter).options(defer(DeadLetter.request))  # a listing shows no bodies: none are loaded
    if consumer:
        query = query.where(DeadLetter.consumer == consumer)
    if status:
        query = query.where(DeadLetter.status == status)
    return list(session.scalars(query.order_by(DeadLetter.created_at.desc()).limit(limit)))


REPLAY_SECONDS = 120  # how long the status API holds a letter's replay lease (its resend times out at 60 s)


def replay_lease(letter_id: str) -> str:
    """The lease the status API holds while it sends a letter back: one replay of a letter at a time."""
    return f"replay:{letter_id}"


def being_replayed(session: Session, letter_id: str, *, consumer: str, source: str, event_id: str) -> DeadLetter | None:
    """The letter a delivery marked `ctflow-replay-of: letter_id` replays, if that is what it really is:
    an open letter of this consumer, for this very event, whose replay the status API is making now.
    A marker that fails any of these is not trusted (the delivery is handled as any other)."""
    from . import leases

    letter = get(session, letter_id)
    if letter is None or letter.consumer != consumer or letter.status != "open":
        return None
    if (letter.source, letter.event_id) != (source, event_id):
        return None
    held = leases.state(session, replay_lease(letter_id))
    return letter if held is not None and held.held else None
