"""Engine, transactions and schema migration for the ledger database.

SQLite runs in WAL mode and takes its write lock at BEGIN (BEGIN IMMEDIATE), so
concurrent writers queue instead of failing on lock upgrade; PostgreSQL uses psycopg 3.

Within one process, SQLite transactions also take turns on a lock before BEGIN: left to
SQLite, a waiting writer polls with sleeps that grow to 100 ms, which under concurrent
requests turned a 1 ms transaction into a p99 of over a second. The lock hands the
database to the next thread the moment it is free; other processes still wait on
SQLite's busy timeout as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DataError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from . import outbox
from .sql import CONNECTION, DEFERRED, write_deferred

# The newest migration under migrations/versions; a test keeps it equal to Alembic's head.
SCHEMA_HEAD = "0005_rollout_serving"
BUSY_TIMEOUT_SECONDS = 60
_SQLITE_TURNS: dict[str, threading.RLock] = {}  # one per database URL, shared by every Ledger on it
_TURNS_LOCK = threading.Lock()


def normalize_url(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, *, writer: bool = True) -> Engine:
    """`writer`: SQLite transactions take the write lock at BEGIN; readers begin deferred."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_SECONDS},
            pool_size=8,
            max_overflow=16,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine
    # No pre-ping: it costs a round trip on every transaction. A connection the server
    # dropped fails its one transaction (a 503 the sender retries), and SQLAlchemy then
    # replaces every pooled connection; recycling keeps idle ones from going stale.
    return create_engine(url, pool_size=10, max_overflow=20, pool_recycle=900)


class _Turn:
    """A re-entrant lock that gives up after SQLite's busy timeout, as SQLite itself would."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=BUSY_TIMEOUT_SECONDS):
            raise TimeoutError(f"the ledger stayed busy for {BUSY_TIMEOUT_SECONDS} s")

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def _turn_for(url: str) -> AbstractContextManager[None]:
    if not url.startswith("sqlite"):
        return nullcontext()
    with _TURNS_LOCK:
        return _Turn(_SQLITE_TURNS.setdefault(url, threading.RLock()))


def data_error_reason(exc: DataError) -> str:
    """What the database said when it refused a value as data (too long, a NUL character, ...): its first line."""
    said = str(exc.orig if exc.orig is not None else exc).strip()
    return said.splitlines()[0] if said else type(exc).__name__


InTransactionPublisher = Callable[[Session, list[outbox.OutboxRow]], None]


class Ledger:
    """Owns the engine; hands out one Session per transaction.

    At commit it writes what the transaction deferred: staged outbox rows (published in
    the same commit when a bus lives in this database) and deferred timeline rows.
    """

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "before_commit", self._write_pending)
        self._turn = _turn_for(self.url)
        self._publisher: InTransactionPublisher | None = None
        # Reads on SQLite get engines of their own, beginning deferred: in WAL mode a reader
        # never waits for the writer (nor takes its turn). PostgreSQL reads use the one engine.
        self._reader = make_engine(self.url, writer=False) if self.url.startswith("sqlite") else self.engine
        self._read_sessions = sessionmaker(self._reader, expire_on_commit=False)

    def publish_in_transaction(self, publisher: InTransactionPublisher | None) -> None:
        """Have `publisher(tx, rows)` publish outbox rows in the transaction that writes them (None: don't).

        For a bus stored in this same database: an event is then published exactly when
        it is committed, with no window in which a crash leaves it unsent.
        """
        self._publisher = publisher

    def _write_pending(self, session: Session, *_: object) -> None:
        staged = outbox.write_staged(session, sent=self._publisher is not None)
        if staged and self._publisher is not None:
            self._publisher(session, staged)
        write_deferred(session)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Commit on success, roll back on any exception."""
        with self._turn, self._sessions.begin() as session:
            session.info[DEFERRED] = {}
            session.info[outbox.STAGED] = []
            session.info[CONNECTION] = session.connection()
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads: a consistent snapshot that never waits for writers."""
        with self._read_sessions.begin() as session:
            yield session

    def schema_revision(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except (OperationalError, ProgrammingError):
            return None

    def migrate(self) -> None:
        """Bring the schema to head; cheap when already there (Alembic is imported only if needed)."""
        if self.schema_revision() == SCHEMA_HEAD:
            return
        from .migrate import upgrade

        upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()
        self._reader.dispose()
