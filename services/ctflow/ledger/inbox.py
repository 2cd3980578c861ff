"""The inbox: claim an event for a consumer exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import String, delete, select, update
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from .sql import insert_many
from .tables import DeadLetter, InboxEntry, table_of

_INBOX = table_of(InboxEntry)
_DEAD_LETTERS = table_of(DeadLetter)


def _length(column_type: TypeEngine[Any]) -> int:
    assert isinstance(column_type, String) and column_type.length is not None, "inbox keys are bounded strings"
    return column_type.length


def unkeepable_key(source: str, event_id: str, event_type: str) -> str | None:
    """Why an event's source, id or type cannot be kept in the inbox (or a dead letter); None if they can.

    PostgreSQL refuses an over-long value or a NUL character, and would refuse it again on
    every redelivery: the intake checks first and dead-letters such an event under a
    stand-in key instead.
    """
    for what, value, name in (
        ("source", source, "source"),
        ("id", event_id, "event_id"),
        ("type", event_type, "event_type"),
    ):
        limit = min(_length(table.c[name].type) for table in (_INBOX, _DEAD_LETTERS))
        if len(value) > limit:
            return f"event {what} is {len(value)} characters long, over the {limit} the ledger keeps"
        if "\x00" in value:
            return f"event {what} contains a NUL character, which the ledger cannot keep"
    return None


def claim(session: Session, consumer: str, source: str, event_id: str, event_type: str, outcome: str) -> bool:
    """Record the event; False when this consumer already has it (a duplicate)."""
    return claim_many(session, consumer, [(source, event_id, event_type)], outcome)[0]


def claim_many(
    session: Session, consumer: str, events: Sequence[tuple[str, str, str]], outcome: str = "processed"
) -> list[bool]:
    """Record each (source, id, type) in one statement; for each, whether it was new.

    False for an event this consumer already has, and for a repeat of an earlier one in
    `events` (the first is the one that counts).
    """
    first: dict[tuple[str, str], int] = {}
    for place, (source, event_id, _) in enumerate(events):
        first.setdefault((source, event_id), place)
    rows = [
        dict(
            consumer=consumer,
            source=events[place][0],
            event_id=events[place][1],
            event_type=events[place][2],
            outcome=outcome,
        )
        for place in first.values()
    ]
    written = insert_many(session, _INBOX, rows, returning=("source", "event_id"), skip_conflicts=True)
    new = {(source, event_id) for source, event_id in written}
    return [
        first[(source, event_id)] == place and (source, event_id) in new
        for place, (source, event_id, _) in enumerate(events)
    ]


def holds(session: Session, consumer: str, source: str, event_id: str) -> bool:
    """Whether this consumer already has the event."""
    inbox = _INBOX.c
    return (
        session.execute(
            select(inbox.id).where(inbox.consumer == consumer, inbox.source == source, inbox.event_id == event_id)
        ).first()
        is not None
    )


def set_outcome(session: Session, consumer: str, source: str, event_id: str, outcome: str) -> None:
    inbox = _INBOX.c
    session.execute(
        update(_INBOX)
        .where(inbox.consumer == consumer, inbox.source == source, inbox.event_id == event_id)
        .values(outcome=outcome)
    )


def release(session: Session, consumer: str, source: str, event_id: str) -> None:
    """Forget a rejected event so a replay can process it afresh."""
    session.execute(
        delete(InboxEntry).where(
            InboxEntry.consumer == consumer, InboxEntry.source == source, InboxEntry.event_id == event_id
        )
    )
