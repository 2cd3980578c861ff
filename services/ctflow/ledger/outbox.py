"""The outbox: events written in the handler's transaction, published after commit.

`add` stages a row on the transaction and returns it as an `OutboxRow`; the ledger
writes every staged row at commit as one INSERT and fills in their ids, so the relay
publishes from memory without reading anything back. A bus stored in the ledger's own
database is written in that same commit (`Ledger.publish_in_transaction`), its rows
born sent; for any other bus, rows are marked sent a batch at a time once published.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from ..events import Event, to_pubsub
from .sql import execute, insert_many
from .tables import OutboxMessage, table_of, utcnow


@dataclass(slots=True)
class OutboxRow:
    """An outbox row: what the relay needs to publish it. `id` is set once the row is written."""

    topic: str
    event_id: str
    event_type: str
    data: bytes
    attributes: dict[str, Any]
    id: int | None = None


STAGED = "ctflow.staged_outbox"  # Session.info key: rows `add` staged, written by `write_staged` at commit


_OUTBOX = table_of(OutboxMessage)
_COLUMNS = _OUTBOX.c
_UNSENT = _COLUMNS.sent_at.is_(None)
_SENT_NOW = {"sent_at": bindparam("now"), "attempts": _COLUMNS.attempts + 1}
_PUBLISHED = (_COLUMNS.id, _COLUMNS.topic, _COLUMNS.event_id, _COLUMNS.event_type, _COLUMNS.data, _COLUMNS.attributes)
# Built once: these run for every event, and building a statement costs more than running it.
_TAKE_DUE = (
    update(_OUTBOX)
    .where(
        _COLUMNS.id.in_(
            select(_COLUMNS.id)
            .where(_UNSENT, _COLUMNS.created_at <= bindparam("due"))
            .order_by(_COLUMNS.id)
            .limit(bindparam("limit"))
            .scalar_subquery()
        ),
        _UNSENT,
    )
    .values(_SENT_NOW)
    .returning(*_PUBLISHED)
)
_MARK_SENT = update(_OUTBOX).where(_COLUMNS.id.in_(bindparam("ids", expanding=True)), _UNSENT).values(_SENT_NOW)


def add(session: Session, topic: str, event: Event) -> OutboxRow:
    """Stage the event on this `Ledger.transaction()`; the ledger writes it at commit (`write_staged`)."""
    data, attributes = to_pubsub(event)
    row = OutboxRow(topic, event.id, event.type, data, attributes)
    session.info[STAGED].append(row)
    return row


def write_staged(session: Session, *, sent: bool = False) -> list[OutboxRow]:
    """Write the rows staged on this transaction (one INSERT), in order, and return them with their ids.

    `sent`: their bus message is written in this same transaction.
    """
    rows = session.info.get(STAGED)
    if not rows:
        return []
    session.info[STAGED] = []
    now = utcnow()
    settled = {"sent_at": now, "attempts": 1} if sent else {"sent_at": None, "attempts": 0}
    written = insert_many(
        session,
        _OUTBOX,
        [
            dict(
                topic=row.topic,
                event_id=row.event_id,
                event_type=row.event_type,
                data=row.data,
                attributes=row.attributes,
                created_at=now,
                **settled,
            )
            for row in rows
        ],
        returning=("event_id", "id"),
    )  # ids come back in no set order: matched on event ids
    ids: dict[str, deque[int]] = defaultdict(deque)  # an event id written twice gets its ids in row order
    for event_id, row_id in sorted(written, key=lambda pair: pair[1]):
        ids[event_id].append(row_id)
    for row in rows:
        row.id = ids[row.event_id].popleft()
    return rows


def unsent(session: Session, *, older_than: timedelta = timedelta(0), limit: int = 500) -> list[OutboxMessage]:
    query = select(OutboxMessage).where(
        OutboxMessage.sent_at.is_(None), OutboxMessage.created_at <= utcnow() - older_than
    )
    return list(session.scalars(query.order_by(OutboxMessage.id).limit(limit)))


def take_unsent(session: Session, *, older_than: timedelta = timedelta(0), limit: int = 500) -> list[OutboxRow]:
    """Mark due unsent rows sent and return them, in id order, in one statement.

    For a bus that publishes inside this same transaction: the row is sent exactly when
    its message is written. Two relays racing for a row cannot both take it: the
    second one's UPDATE waits for the first and then finds it sent.
    """
    now = utcnow()
    taken = execute(session, _TAKE_DUE, {"due": now - older_than, "limit": limit, "now": now})
    rows = [
        OutboxRow(topic, event_id, event_type, data, attributes, row_id)
        for row_id, topic, event_id, event_type, data, attributes in taken
    ]
    return sorted(rows, key=lambda row: row.id or 0)


def mark_sent(session: Session, ids: Sequence[int], when: datetime | None = None) -> None:
    """Mark rows sent (rows already sent are left as they were)."""
    if ids:
        execute(session, _MARK_SENT, {"ids": list(ids), "now": when or utcnow()})


def mark_failed(session: Session, row_id: int, error: str) -> None:
    execute(
        session,
        update(_OUTBOX).where(_COLUMNS.id == row_id).values(attempts=_COLUMNS.attempts + 1, last_error=error[:2000]),
    )
