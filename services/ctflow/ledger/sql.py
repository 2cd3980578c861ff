"""Dialect-aware statements shared by the ledger modules."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import DeclarativeBase, Session


def insert_ignore(session: Session, model: type[DeclarativeBase], values: dict[str, Any]) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING; the new row's id, or None when the key already existed.

    On PostgreSQL a concurrent insert of the same key waits for the other transaction
    and then does nothing, which is what turns concurrent redeliveries into one effect.
    """
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(model).values(**values).on_conflict_do_nothing().returning(model.id)  # type: ignore[attr-defined]
    return session.execute(stmt).scalar()
