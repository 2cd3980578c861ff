"""Dead letters: permanently bad input, kept whole with a reason a person understands."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .tables import DeadLetter


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
