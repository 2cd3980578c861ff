"""Dialect-aware statements shared by the ledger modules.

Statements on the event path are plain Core (no ORM unit of work), built once per table
and dialect and executed with parameters, so SQLAlchemy's compiled cache serves them:
building an INSERT anew for every event cost more than running it.

Rows that nothing reads back within the transaction (run timeline entries) can be
deferred: queued on the session and written at commit as one multi-row INSERT, which
on PostgreSQL is one round trip instead of one per row.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Insert, Table
from sqlalchemy.orm import DeclarativeBase, Session


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def insert_ignore(session: Session, model: type[DeclarativeBase], values: dict[str, Any]) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING; the new row's id, or None when the key already existed.

    On PostgreSQL a concurrent insert of the same key waits for the other transaction
    and then does nothing, which is what turns concurrent redeliveries into one effect.
    """
    return session.execute(_insert_ignore(dialect_of(session), model.__table__), values).scalar()  # type: ignore[arg-type]


def insert_returning_id(session: Session, model: type[DeclarativeBase], values: dict[str, Any]) -> int:
    """A plain INSERT (column defaults applied) that hands back the new row's id."""
    return session.execute(_insert_returning_id(model.__table__), values).scalar_one()  # type: ignore[arg-type]


def insert_rows(session: Session, model: type[DeclarativeBase], rows: list[dict[str, Any]]) -> None:
    """INSERT one or many rows (executemany) without reading anything back."""
    if rows:
        session.execute(model.__table__.insert(), rows)  # type: ignore[attr-defined]


DEFERRED = "ctflow.deferred_inserts"  # Session.info key; the Ledger sets it and writes it before commit


def defer_insert(session: Session, model: type[DeclarativeBase], row: dict[str, Any]) -> None:
    """Queue a row to be written at commit (in queue order); at once if the session defers nothing."""
    pending = session.info.get(DEFERRED)
    if pending is None:
        insert_rows(session, model, [row])
    else:
        pending.setdefault(model, []).append(row)


def write_deferred(session: Session, *_: Any) -> None:
    """Write every deferred row now (the Ledger calls this before commit; readers before reading).

    Pending ORM changes are flushed first, so a deferred row may refer to an object
    added in the same transaction.
    """
    pending = session.info.get(DEFERRED)
    if pending:
        session.flush()
    while pending:
        model, rows = next(iter(pending.items()))
        del pending[model]
        insert_rows(session, model, rows)


@cache
def _insert_ignore(dialect: str, table: Table) -> Insert:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing().returning(table.c.id)


@cache
def _insert_returning_id(table: Table) -> Insert:
    return table.insert().returning(table.c.id)
