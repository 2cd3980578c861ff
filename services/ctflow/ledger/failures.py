"""Failed attempts at handling one event: a handler that fails on the same input every time.

A transient failure rolls the delivery back and asks the sender to retry. Most clear up
(a lock, a store briefly down); a bug or an input the code cannot cope with fails every
time. Counting each consumer's failures per event lets the intake keep such an event as
a dead letter with the error, instead of leaving it to the sender's retries and, after
them, to a dead-letter topic that records no reason.
"""

from __future__ import annotations

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from .sql import dialect_insert, dialect_of, execute
from .tables import DeliveryFailure, InboxEntry, table_of, utcnow

_FAILURES = table_of(DeliveryFailure)
_INBOX = table_of(InboxEntry)
MAX_ERROR_CHARS = 2000


def describe(error: BaseException) -> str:
    """The error as a person reads it in a dead letter: its type and message, bounded, storable."""
    message = str(error)
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text[:MAX_ERROR_CHARS].replace("\x00", "\\x00")  # PostgreSQL text cannot hold NUL


def record(session: Session, consumer: str, source: str, event_id: str, error: str) -> int:
    """Count one more failure of this event for this consumer; how many there have been in a row.

    `error` is what `describe` made of the exception.
    """
    now = utcnow()
    insert = dialect_insert(dialect_of(session), _FAILURES).values(
        consumer=consumer,
        source=source,
        event_id=event_id,
        attempts=1,
        last_error=error,
        first_failed_at=now,
        last_failed_at=now,
    )
    counted = insert.on_conflict_do_update(
        index_elements=[_FAILURES.c.consumer, _FAILURES.c.source, _FAILURES.c.event_id],
        set_={"attempts": _FAILURES.c.attempts + 1, "last_error": error, "last_failed_at": now},
    ).returning(_FAILURES.c.attempts)
    return int(execute(session, counted).scalar_one())


def clear(session: Session, consumer: str, source: str, event_id: str) -> None:
    """Forget the event's failures (it is now a dead letter; a replay starts counting afresh)."""
    execute(
        session,
        delete(_FAILURES).where(
            _FAILURES.c.consumer == consumer, _FAILURES.c.source == source, _FAILURES.c.event_id == event_id
        ),
    )


def forget_settled(session: Session) -> int:
    """Drop the counts of events their consumer has since handled (the inbox holds them); how many.

    An event that failed and then succeeded leaves its count behind (the success does not
    look for one: that would cost every event a statement); a reconcile tick clears it.
    """
    settled = exists(
        select(_INBOX.c.id).where(
            _INBOX.c.consumer == _FAILURES.c.consumer,
            _INBOX.c.source == _FAILURES.c.source,
            _INBOX.c.event_id == _FAILURES.c.event_id,
        )
    )
    return int(execute(session, delete(_FAILURES).where(settled)).rowcount)
