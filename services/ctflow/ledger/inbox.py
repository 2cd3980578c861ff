"""The inbox: claim an event for a consumer exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from sqlalchemy import Insert, delete, select, update
from sqlalchemy.orm import Session

from .sql import dialect_of, execute, insert_ignoring_conflicts
from .tables import InboxEntry


def claim(session: Session, consumer: str, source: str, event_id: str, event_type: str, outcome: str) -> bool:
    """Record the event; False when this consumer already has it (a duplicate)."""
    return claim_many(session, consumer, [(source, event_id, event_type)], outcome)[0]


def claim_many(session: Session, consumer: str, events: Sequence[tuple[str, str, str]],
               outcome: str = "processed") -> list[bool]:
    """Record each (source, id, type) in one statement; for each, whether it was new.

    False for an event this consumer already has, and for a repeat of an earlier one in
    `events` (the first is the one that counts).
    """
    first: dict[tuple[str, str], int] = {}
    for place, (source, event_id, _) in enumerate(events):
        first.setdefault((source, event_id), place)
    rows = [dict(consumer=consumer, source=events[place][0], event_id=events[place][1],
                 event_type=events[place][2], outcome=outcome) for place in first.values()]
    new = {(source, event_id) for source, event_id in execute(session, _claim_statement(dialect_of(session)), rows)}
    return [first[(source, event_id)] == place and (source, event_id) in new
            for place, (source, event_id, _) in enumerate(events)]


@cache
def _claim_statement(dialect: str) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING RETURNING the keys it inserted (many rows: one multi-row INSERT)."""
    inbox = InboxEntry.__table__
    return insert_ignoring_conflicts(dialect, inbox).returning(inbox.c.source, inbox.c.event_id)  # type: ignore[arg-type]


def holds(session: Session, consumer: str, source: str, event_id: str) -> bool:
    """Whether this consumer already has the event."""
    inbox = InboxEntry.__table__.c
    return session.execute(select(inbox.id).where(
        inbox.consumer == consumer, inbox.source == source, inbox.event_id == event_id)).first() is not None


def set_outcome(session: Session, consumer: str, source: str, event_id: str, outcome: str) -> None:
    inbox = InboxEntry.__table__.c
    session.execute(update(InboxEntry.__table__).where(  # type: ignore[arg-type]
        inbox.consumer == consumer, inbox.source == source, inbox.event_id == event_id
    ).values(outcome=outcome))


def release(session: Session, consumer: str, source: str, event_id: str) -> None:
    """Forget a rejected event so a replay can process it afresh."""
    session.execute(delete(InboxEntry).where(
        InboxEntry.consumer == consumer, InboxEntry.source == source, InboxEntry.event_id == event_id
    ))
