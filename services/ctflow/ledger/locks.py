"""Named locks held until the ledger transaction that takes them ends.

PostgreSQL takes a transaction-scoped advisory lock on a key derived from the name; SQLite
needs none, since every ledger transaction there already holds the database's single
writer lock (BEGIN IMMEDIATE). Which database it is stays inside the ledger package.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.orm import Session

from .sql import dialect_of

_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def hold(tx: Session, name: str) -> None:
    """Wait for, then hold, the lock called `name` until `tx` commits or rolls back."""
    if dialect_of(tx) == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        tx.execute(_ADVISORY_LOCK, {"key": key})
