"""The outbox: events written in the handler's transaction, published after commit."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..codec import to_pubsub
from ..events import Event
from .tables import OutboxMessage, utcnow


def add(session: Session, topic: str, event: Event) -> OutboxMessage:
    data, attributes = to_pubsub(event)
    row = OutboxMessage(topic=topic, event_id=event.id, event_type=event.type, data=data, attributes=attributes)
    session.add(row)
    return row


def unsent(session: Session, *, older_than: timedelta = timedelta(0), limit: int = 500, ids: list[int] | None = None) -> list[OutboxMessage]:
    query = select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
    if ids is not None:
        query = query.where(OutboxMessage.id.in_(ids))
    else:
        query = query.where(OutboxMessage.created_at <= utcnow() - older_than)
    return list(session.scalars(query.order_by(OutboxMessage.id).limit(limit)))


def mark_sent(session: Session, row_id: int, when: datetime | None = None) -> None:
    row = session.get(OutboxMessage, row_id)
    if row is not None and row.sent_at is None:
        row.sent_at = when or utcnow()
        row.attempts += 1


def mark_failed(session: Session, row_id: int, error: str) -> None:
    row = session.get(OutboxMessage, row_id)
    if row is not None:
        row.attempts += 1
        row.last_error = error[:2000]
