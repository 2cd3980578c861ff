"""Dialect-aware statements shared by the ledger modules.

Statements on the event path are plain Core (no ORM unit of work), built once per table
and dialect and executed with parameters, so SQLAlchemy's compiled cache serves them:
building an INSERT anew for every event cost more than running it. They run on the
transaction's Connection (`execute`), skipping the Session's per-statement bookkeeping.

Rows that nothing reads back within the transaction (run timeline entries) can be
deferred: queued on the session and written at commit as one multi-row INSERT, which
on PostgreSQL is one round trip instead of one per row.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import CursorResult, Executable, Insert, Table
from sqlalchemy.orm import DeclarativeBase, Session

CONNECTION = "ctflow.connection"  # Session.info key: the transaction's Connection, set by the Ledger


def execute(session: Session, statement: Executable, params: Any = None) -> CursorResult[Any]:
    """Run a Core statement on the session's transaction, as `session.execute` would, with less overhead."""
    connection = session.info.get(CONNECTION) or session.connection()
    return connection.execute(statement, params)


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def insert_ignore(session: Session, model: type[DeclarativeBase], values: dict[str, Any]) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING; the new row's id, or None when the key already existed.

    On PostgreSQL a concurrent insert of the same key waits for the other transaction
    and then does nothing, which is what turns concurrent redeliveries into one effect.
    """
    return execute(session, _insert_ignore(dialect_of(session), model.__table__), values).scalar()  # type: ignore[arg-type]


def insert_rows(session: Session, model: type[DeclarativeBase], rows: list[dict[str, Any]]) -> None:
    """INSERT one or many rows (executemany) without reading anything back."""
    if rows:
        execute(session, model.__table__.insert(), rows)  # type: ignore[attr-defined]


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

    Tables are written parents first (a run before its timeline), and pending ORM changes
    are flushed first, so a deferred row may refer to an object added in the same transaction.
    """
    pending = session.info.get(DEFERRED)
    if not pending:
        return
    session.flush()
    for model in sorted(pending, key=lambda model: _table_order()[model.__table__.name]):  # type: ignore[attr-defined]
        insert_rows(session, model, pending.pop(model))


@cache
def _table_order() -> dict[str, int]:
    """Table name -> its place in dependency order (parents first)."""
    from .tables import Base

    return {table.name: place for place, table in enumerate(Base.metadata.sorted_tables)}


@cache
def _insert_ignore(dialect: str, table: Table) -> Insert:
    return insert_ignoring_conflicts(dialect, table).returning(table.c.id)


def insert_ignoring_conflicts(dialect: str, table: Table) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING in `dialect` (SQLite or PostgreSQL)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()
