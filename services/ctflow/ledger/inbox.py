"""The inbox: claim an event for a consumer exactly once."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .sql import insert_ignore
from .tables import InboxEntry


def claim(session: Session, consumer: str, source: str, event_id: str, event_type: str, outcome: str) -> bool:
    """Record the event; False when this consumer already has it (a duplicate)."""
    values = dict(consumer=consumer, source=source, event_id=event_id, event_type=event_type, outcome=outcome)
    return insert_ignore(session, InboxEntry, values) is not None


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
