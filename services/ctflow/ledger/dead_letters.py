"""Dead letters: permanently bad input, kept whole with a reason a person understands."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .tables import DeadLetter

MAX_STORED_BODY = 32 * 1024 * 1024  # what a dead letter keeps of a body; Cloud Run caps requests at 32 MiB anyway
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-serverless-authorization"})


def stored_request(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The request as kept in a dead letter: everything but credentials."""
    kept = body[:MAX_STORED_BODY]
    try:
        text, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode(), "base64"
    return {
        "headers": {k.lower(): v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS},
        "body": text,
        "encoding": encoding,
        "size": len(body),
        "truncated": len(kept) < len(body),
    }


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
    query = select(DeadLetter)
    if consumer:
        query = query.where(DeadLetter.consumer == consumer)
    if status:
        query = query.where(DeadLetter.status == status)
    return list(session.scalars(query.order_by(DeadLetter.created_at.desc()).limit(limit)))
