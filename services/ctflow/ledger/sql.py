"""Dialect-aware statements shared by the ledger modules.

Statements on the event path are plain Core (no ORM unit of work), built once per table
and dialect and executed with parameters, so SQLAlchemy's compiled cache serves them:
building an INSERT anew for every event cost more than running it. They run on the
transaction's Connection (`execute`), skipping the Session's per-statement bookkeeping.

Rows go in a statement per table however many there are (`insert_many`). Rows that
nothing reads back within the transaction (new runs, timeline entries) can be deferred:
queued on the session and written at commit, a table's rows from a whole batch of
deliveries in one statement.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import (
    JSON,
    CursorResult,
    Executable,
    Insert,
    Row,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    column,
    func,
    literal_column,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.sql.elements import ColumnClause

from .tables import table_of

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgresqlInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert

    AnyRow: TypeAlias = Row[*tuple[Any, ...]]  # a row of any columns

CONNECTION = "ctflow.connection"  # Session.info key: the transaction's Connection, set by the Ledger


def execute(session: Session, statement: Executable, params: Any = None) -> CursorResult[*tuple[Any, ...]]:
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
    written = insert_many(session, table_of(model), [values], returning=("id",), skip_conflicts=True)
    return written[0][0] if written else None


def insert_many(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    returning: Sequence[str] = (),
    skip_conflicts: bool = False,
) -> Sequence[AnyRow]:
    """INSERT rows (each with the same keys) in one statement; each written row's `returning` columns.

    `skip_conflicts`: a row whose unique key exists already (or repeats an earlier row's)
    is left out, and returns nothing. Returned rows come in no promised order: match them
    on a key.

    On PostgreSQL the rows travel as one JSON document that the server turns into rows
    of the table (json_populate_recordset): one short statement whatever the number of
    rows, which psycopg parses once and the server prepares once, and one C-speed
    encoding of all the values. The alternatives measured 2-5x the client CPU: a
    multi-row VALUES list is a new statement for every batch size, which psycopg parses
    anew each time; executemany sends one Bind/Execute per row; arrays per column are
    escaped element by element in Python. Values are those the ledger's columns hold:
    strings, numbers, None, JSON documents, aware datetimes and bytes (see `_as_json`).
    """
    if not rows:
        return []
    dialect = dialect_of(session)
    statement = _bulk_insert(dialect, table, tuple(rows[0]), tuple(returning), skip_conflicts)
    if dialect == "postgresql":
        result = execute(session, statement, {"rows": json.dumps(rows, default=_as_json, separators=(",", ":"))})
    else:
        result = execute(session, statement, list(rows))
    return result.all() if returning else []


def _as_json(value: Any) -> str:
    """What PostgreSQL's input functions read, for the values JSON has no type for."""
    if isinstance(value, datetime):
        return value.isoformat()  # timestamptz reads the offset; the ledger's datetimes are all aware
    if isinstance(value, bytes):
        return "\\x" + value.hex()  # bytea's hex input format
    raise TypeError(f"no JSON form for a {type(value).__name__} column value")


DEFERRED = "ctflow.deferred_inserts"  # Session.info key; the Ledger sets it and writes it before commit


def defer_insert(session: Session, model: type[DeclarativeBase], row: dict[str, Any]) -> None:
    """Queue a row to be written at commit, in queue order (in a `Ledger.transaction()`, which writes it)."""
    session.info[DEFERRED].setdefault(model, []).append(row)


def write_deferred(session: Session, *_: Any) -> None:
    """Write every deferred row now (the Ledger calls this before commit; readers before reading).

    Tables are written parents first (a run before its timeline), and pending ORM changes
    are flushed first, so a deferred row may refer to an object added in the same transaction.
    """
    pending = session.info.get(DEFERRED)
    if not pending:
        return
    session.flush()
    for model in sorted(pending, key=lambda model: _table_order()[table_of(model).name]):
        insert_many(session, table_of(model), pending.pop(model))


@cache
def _table_order() -> dict[str, int]:
    """Table name -> its place in dependency order (parents first)."""
    from .tables import Base

    return {table.name: place for place, table in enumerate(Base.metadata.sorted_tables)}


@cache
def _bulk_insert(
    dialect: str, table: Table, names: tuple[str, ...], returning: tuple[str, ...], skip_conflicts: bool
) -> Insert:
    if dialect == "postgresql":
        # Keys missing from a row would read as NULL here, not as the column's default: all rows have all keys.
        records = func.json_populate_recordset(
            literal_column(f'NULL::"{table.name}"'), cast(bindparam("rows", type_=Text), JSON)
        )
        columns: list[ColumnClause[Any]] = [column(name) for name in names]  # quoted where a name needs it
        source: Select[*tuple[Any, ...]] = select(*columns).select_from(records)
        statement = dialect_insert(dialect, table).from_select(names, source)
    else:
        statement = dialect_insert(dialect, table)
    if skip_conflicts:
        statement = statement.on_conflict_do_nothing()
    return statement.returning(*(table.c[name] for name in returning)) if returning else statement


def dialect_insert(dialect: str, table: Table) -> PostgresqlInsert | SqliteInsert:
    """The dialect's own INSERT construct (it has ON CONFLICT … DO NOTHING / DO UPDATE)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)
