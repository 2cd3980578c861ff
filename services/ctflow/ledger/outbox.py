"""The outbox: events written in the handler's transaction, published after commit.

Rows are written and settled with plain statements: `add` inserts and returns what
was written as an `OutboxRow` (the relay publishes from it without reading it back),
and rows are marked sent a batch at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from ..codec import to_pubsub
from ..events import Event
from .sql import insert_returning_id
from .tables import OutboxMessage, utcnow


class OutboxRow(NamedTuple):
    """An outbox row as written: what the relay needs to publish it."""

    id: int
    topic: str
    event_id: str
    event_type: str
    data: bytes
    attributes: dict[str, Any]


_OUTBOX = OutboxMessage.__table__
_COLUMNS = _OUTBOX.c
_UNSENT = _COLUMNS.sent_at.is_(None)
_SENT_NOW = {"sent_at": bindparam("now"), "attempts": _COLUMNS.attempts + 1}
_PUBLISHED = (_COLUMNS.id, _COLUMNS.topic, _COLUMNS.event_id, _COLUMNS.event_type, _COLUMNS.data, _COLUMNS.attributes)
# Built once: these run for every event, and building a statement costs more than running it.
_TAKE_IDS = (update(_OUTBOX).where(_COLUMNS.id.in_(bindparam("ids", expanding=True)), _UNSENT)
             .values(_SENT_NOW).returning(*_PUBLISHED))
_TAKE_DUE = (update(_OUTBOX).where(_COLUMNS.id.in_(
    select(_COLUMNS.id).where(_UNSENT, _COLUMNS.created_at <= bindparam("due"))
    .order_by(_COLUMNS.id).limit(bindparam("limit")).scalar_subquery()), _UNSENT)
    .values(_SENT_NOW).returning(*_PUBLISHED))
_MARK_SENT = update(_OUTBOX).where(_COLUMNS.id.in_(bindparam("ids", expanding=True)), _UNSENT).values(_SENT_NOW)


def add(session: Session, topic: str, event: Event) -> OutboxRow:
    """Write the event in this transaction; returns the row as written."""
    data, attributes = to_pubsub(event)
    values = dict(topic=topic, event_id=event.id, event_type=event.type, data=data, attributes=attributes,
                  created_at=utcnow(), attempts=0)
    row_id = insert_returning_id(session, OutboxMessage, values)
    return OutboxRow(row_id, topic, event.id, event.type, data, attributes)


def unsent(session: Session, *, older_than: timedelta = timedelta(0), limit: int = 500) -> list[OutboxMessage]:
    query = select(OutboxMessage).where(OutboxMessage.sent_at.is_(None),
                                        OutboxMessage.created_at <= utcnow() - older_than)
    return list(session.scalars(query.order_by(OutboxMessage.id).limit(limit)))


def take_unsent(session: Session, *, older_than: timedelta = timedelta(0), limit: int = 500,
                ids: Sequence[int] | None = None) -> list[OutboxRow]:
    """Mark the given (or all due) unsent rows sent and return them, in id order, in one statement.

    For a bus that publishes inside this same transaction: the row is sent exactly when
    its message is written. Two relays racing for a row cannot both take it: the
    second one's UPDATE waits for the first and then finds it sent.
    """
    now = utcnow()
    if ids is not None:
        taken = session.execute(_TAKE_IDS, {"ids": list(ids), "now": now})
    else:
        taken = session.execute(_TAKE_DUE, {"due": now - older_than, "limit": limit, "now": now})
    return sorted((OutboxRow(*row) for row in taken), key=lambda row: row.id)


def mark_sent(session: Session, ids: Sequence[int], when: datetime | None = None) -> None:
    """Mark rows sent (rows already sent are left as they were)."""
    if ids:
        session.execute(_MARK_SENT, {"ids": list(ids), "now": when or utcnow()})


def mark_failed(session: Session, row_id: int, error: str) -> None:
    session.execute(update(_OUTBOX).where(_COLUMNS.id == row_id)
                    .values(attempts=_COLUMNS.attempts + 1, last_error=error[:2000]))
