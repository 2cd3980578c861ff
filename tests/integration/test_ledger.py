"""The ledger's event path on SQLite and PostgreSQL: live runs, timeline order, the outbox relay.

These pin what the fast paths must keep: a run `runs.create` defers can be read and
changed in its own transaction, deferred timeline entries are visible and ordered, the embedded bus publishes an event
in the commit that writes it and any unsent row exactly once however many relays race,
and SQLite writers take turns instead of failing or sleeping in SQLite's busy handler.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, func, select

from ctflow import events, states
from ctflow.bus.relay import OutboxRelay
from ctflow.events import Event
from ctflow.ledger import Ledger, inbox, outbox, runs
from ctflow.ledger.sql import insert_many
from ctflow.ledger.tables import BusDelivery, BusMessage, OutboxMessage, Run
from ctflow.topology import EVENTS_TOPIC


def _create(tx, run_id: str) -> Run:  # type: ignore[no-untyped-def]
    runs.create(
        tx,
        run_id=run_id,
        pipeline="digits",
        trigger={"kind": "test"},
        hyperparameters={"lr": 0.1},
        service="test",
        dataset_version="v1",
        dataset={"version": "v1"},
    )
    return runs.get(tx, run_id)


def _event(n: int) -> Event:
    return Event(type=events.TRAINING_REQUESTED, source="//ctflow/test", id=f"e-{n}", data={"n": n})


def test_created_run_is_live_and_its_timeline_is_ordered(deps):
    """A just-created run reads back in its transaction and changes to it are saved; its timeline
    reads back in order, even mid-transaction."""
    with deps.ledger.transaction() as tx:
        run = _create(tx, "digits-live")
        runs.transition(tx, run, states.QUEUED, "test", reason="waiting for a slot")
        run.job = {"state": "launching"}
        runs.note_event(tx, run.id, "received", _event(1), "test")
        assert [(e.kind, e.name) for e in runs.timeline(tx, run.id)] == [
            ("state", "requested"),
            ("state", "queued"),
            ("received", events.TRAINING_REQUESTED),
        ]
    with deps.ledger.transaction() as tx:
        saved = runs.get(tx, "digits-live")
        assert (saved.state, saved.job, saved.reason) == ("queued", {"state": "launching"}, "waiting for a slot")
        assert saved.created_at is not None and saved.trace_id == run.trace_id
        timeline = runs.timeline(tx, "digits-live")
    assert [(e.kind, e.name) for e in timeline] == [
        ("state", "requested"),
        ("state", "queued"),
        ("received", events.TRAINING_REQUESTED),
    ]
    assert timeline[1].detail == {"reason": "waiting for a slot"} and timeline[2].event_id == "e-1"


def test_deferred_rows_are_written_parents_first_and_seen_before_commit(deps):
    """A timeline entry deferred before a new run's row still lands after it (the foreign key holds
    on PostgreSQL), and listing in the same transaction sees the new run."""
    with deps.ledger.transaction() as tx:
        _create(tx, "digits-old")
    with deps.ledger.transaction() as tx:
        runs.note_event(tx, "digits-old", "received", _event(1), "test")  # queues a timeline row first
        runs.create(
            tx, run_id="digits-new", pipeline="digits", trigger={"kind": "test"}, hyperparameters={}, service="test"
        )
        assert {r.id for r in runs.listing(tx)} == {"digits-old", "digits-new"}
    with deps.ledger.transaction() as tx:
        assert [e.name for e in runs.timeline(tx, "digits-new")] == ["requested"]
        assert len(runs.timeline(tx, "digits-old")) == 2


def test_claiming_many_events_at_once_says_which_are_new(deps):
    """One statement: an event already held, and a repeat within the list, are not new."""
    with deps.ledger.transaction() as tx:
        assert inbox.claim(tx, "consumer", "//src", "held", "t", "processed")
    with deps.ledger.transaction() as tx:
        new = inbox.claim_many(
            tx, "consumer", [("//src", "a", "t"), ("//src", "held", "t"), ("//src", "a", "t"), ("//other", "a", "t")]
        )
    assert new == [True, False, False, True]
    with deps.ledger.transaction() as tx:
        assert all(inbox.holds(tx, "consumer", *key) for key in [("//src", "a"), ("//other", "a")])


def test_a_transaction_writes_each_table_in_one_statement_however_many_events_it_has(deps):
    """Eight events, their runs and bus messages: one INSERT per table, on SQLite too (a RETURNING
    that must keep parameter order would make SQLAlchemy write SQLite rows one statement each)."""
    inserts: list[str] = []
    listener = lambda conn, cursor, statement, *args: inserts.append(statement.split("(")[0].strip())  # noqa: E731
    event.listen(deps.ledger.engine, "before_cursor_execute", listener)
    try:
        with deps.ledger.transaction() as tx:
            for n in range(8):
                runs.create(
                    tx,
                    run_id=f"digits-{n}",
                    pipeline="digits",
                    trigger={"kind": "test"},
                    hyperparameters={},
                    service="test",
                )
                outbox.add(
                    tx,
                    EVENTS_TOPIC,
                    Event(
                        type=events.TRAINING_REQUESTED,
                        source="//ctflow/test",
                        id=f"e-{n}",
                        subject=f"digits-{n}",
                        data={"n": n},
                    ),
                )
    finally:
        event.remove(deps.ledger.engine, "before_cursor_execute", listener)
    written = sorted(statement for statement in inserts if statement.startswith("INSERT"))
    assert written == [
        "INSERT INTO bus_deliveries",
        "INSERT INTO bus_messages",
        "INSERT INTO outbox",
        "INSERT INTO run_timeline",
        "INSERT INTO runs",
    ]


def test_rows_written_in_one_statement_read_back_exactly(deps):
    """Every kind of value a ledger column holds survives the one-statement insert (on PostgreSQL the
    rows travel as one JSON document): any bytes, awkward text, nested JSON, NULLs, aware datetimes."""
    awkward = 'quote\' "double" back\\slash\nnew line, tab\t, {braces}, [x], 日本語, emoji 🚀'
    written_at = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=timezone(timedelta(hours=-5)))
    rows = [
        dict(
            topic=awkward,
            event_id="e-1",
            event_type="t",
            data=bytes(range(256)) + b"\\x00",
            attributes={"nested": {"list": [1, 2.5, None, True, awkward]}, "empty": {}},
            created_at=written_at,
            sent_at=None,
            attempts=3,
        ),
        dict(
            topic="plain",
            event_id="e-2",
            event_type="t",
            data=b"",
            attributes={},
            created_at=written_at,
            sent_at=written_at,
            attempts=0,
        ),
    ]
    with deps.ledger.transaction() as tx:
        ids = dict(insert_many(tx, OutboxMessage.__table__, rows, returning=("event_id", "id")))
    with deps.ledger.reading() as tx:
        read = {m.event_id: m for m in tx.scalars(select(OutboxMessage))}
    assert set(ids) == set(read) == {"e-1", "e-2"}
    for row in rows:
        message = read[row["event_id"]]
        assert message.id == ids[row["event_id"]]
        assert {name: getattr(message, name) for name in row} == row
    assert read["e-1"].created_at.tzinfo is not None and read["e-2"].last_error is None


def test_a_rolled_back_transaction_leaves_no_run_and_no_timeline(deps):
    """Deferred timeline rows go with their transaction."""
    with pytest.raises(RuntimeError), deps.ledger.transaction() as tx:
        _create(tx, "digits-gone")
        raise RuntimeError("handler failed")
    with deps.ledger.transaction() as tx:
        assert runs.get(tx, "digits-gone") is None and runs.timeline(tx, "digits-gone") == []


def test_embedded_bus_publishes_an_event_in_the_commit_that_writes_it(deps):
    """Committed: on the bus, owed to its subscription, the outbox row sent. Rolled back: nowhere."""
    with pytest.raises(RuntimeError), deps.ledger.transaction() as tx:
        outbox.add(tx, EVENTS_TOPIC, _event(0))
        raise RuntimeError("handler failed")
    with deps.ledger.transaction() as tx:
        rows = [outbox.add(tx, EVENTS_TOPIC, _event(n)) for n in (1, 2)]
        assert all(row.id is None for row in rows)  # staged until commit
    assert [row.id for row in rows] == sorted(row.id for row in rows) and None not in [row.id for row in rows]
    with deps.ledger.transaction() as tx:
        published = [m.attributes["ce-id"] for m in tx.scalars(select(BusMessage).order_by(BusMessage.id))]
        deliveries = tx.scalars(select(BusDelivery.subscription)).all()
        settled = tx.execute(select(OutboxMessage.event_id, OutboxMessage.sent_at.is_not(None))).all()
    assert published == ["e-1", "e-2"] and deliveries == ["job-launcher-push"] * 2
    assert sorted(settled) == [("e-1", True), ("e-2", True)]
    assert deps.relay.publish_written(rows) == 2 and deps.relay.publish() == 0  # nothing left to send


def test_racing_relays_publish_each_unsent_row_exactly_once(deps):
    """Rows left unsent (written without the relay) and reconcile ticks racing: one bus message per row."""
    unpublished = Ledger(deps.ledger.url)  # no relay: its commits do not publish
    with unpublished.transaction() as tx:
        for n in range(24):
            outbox.add(tx, EVENTS_TOPIC, _event(n))
    unpublished.dispose()
    with ThreadPoolExecutor(6) as pool:
        sent = list(pool.map(lambda _: deps.relay.publish(), range(6)))
    with deps.ledger.transaction() as tx:
        published = [m.attributes["ce-id"] for m in tx.scalars(select(BusMessage))]
        deliveries = tx.scalars(select(BusDelivery.subscription)).all()
        settled = tx.execute(select(OutboxMessage.sent_at.is_not(None), OutboxMessage.attempts)).all()
    assert sum(sent) == 24 and sorted(published) == sorted(f"e-{n}" for n in range(24))
    assert deliveries == ["job-launcher-push"] * 24  # what topology routes training.requested to
    assert set(settled) == {(True, 1)}


class FlakyBus:
    """An outside bus (not in the ledger) that refuses one event id."""

    def __init__(self, refuse: str) -> None:
        self.refuse, self.published = refuse, []

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        if attributes["ce-id"] == self.refuse:
            raise ConnectionError("publisher unavailable")
        self.published.append(attributes["ce-id"])
        return str(len(self.published))


def test_an_outside_bus_is_called_after_commit_and_failures_wait_for_reconcile(deps):
    """Sent rows are marked together; a failed one keeps its error and goes out on the next reconcile."""
    bus = FlakyBus(refuse="e-1")
    relay = OutboxRelay(deps.ledger, bus)
    with deps.ledger.transaction() as tx:
        rows = [outbox.add(tx, EVENTS_TOPIC, _event(n)) for n in range(3)]
    assert relay.publish_written(rows) == 2 and bus.published == ["e-0", "e-2"]
    with deps.ledger.transaction() as tx:
        failed = tx.scalars(select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))).one()
        assert (failed.event_id, failed.attempts) == ("e-1", 1) and "publisher unavailable" in failed.last_error
    bus.refuse = ""
    assert relay.publish() == 1 and relay.publish() == 0
    assert bus.published == ["e-0", "e-2", "e-1"]


def test_sqlite_writers_in_one_process_take_turns(tmp_path):
    """With SQLite's busy timeout at zero, 8 threads writing at once still all commit: they never collide."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    ledger.engine.dispose()

    @event.listens_for(ledger.engine, "connect")
    def _no_busy_wait(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.execute("PRAGMA busy_timeout=0")  # a collision would fail at once: "database is locked"

    start = threading.Barrier(8)

    def write(worker: int) -> None:
        start.wait()
        for n in range(25):
            with ledger.transaction() as tx:
                inbox.claim(tx, "test", f"worker-{worker}", str(n), "t", "processed")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    with ledger.transaction() as tx:
        assert tx.scalar(select(func.count()).select_from(inbox.InboxEntry)) == 200
    ledger.dispose()


def test_a_reader_never_waits_for_a_writer_and_sees_only_committed_rows(deps):
    """A status query during a long write transaction answers at once, from the last commit."""
    holding, release = threading.Event(), threading.Event()

    def write() -> None:
        with deps.ledger.transaction() as tx:
            _create(tx, "digits-in-flight")
            holding.set()
            assert release.wait(10)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert holding.wait(10)
        with deps.ledger.reading() as session:
            assert runs.get(session, "digits-in-flight") is None
    finally:
        release.set()
        writer.join(10)
    with deps.ledger.reading() as session:
        assert runs.get(session, "digits-in-flight") is not None


def test_concurrent_publishers_on_an_outside_bus_each_have_their_rows_marked_once(deps):
    """Rows published after concurrent commits are settled together: every sent row sent, every failure kept."""
    bus = FlakyBus(refuse="e-5")
    relay = OutboxRelay(deps.ledger, bus)
    batches = []
    for n in range(12):
        with deps.ledger.transaction() as tx:
            batches.append([outbox.add(tx, EVENTS_TOPIC, _event(n))])
    with ThreadPoolExecutor(6) as pool:
        sent = list(pool.map(relay.publish_written, batches))
    assert sum(sent) == 11 and sorted(bus.published) == sorted(f"e-{n}" for n in range(12) if n != 5)
    with deps.ledger.transaction() as tx:
        settled = {
            m.event_id: (m.sent_at is not None, m.attempts, m.last_error) for m in tx.scalars(select(OutboxMessage))
        }
    assert settled.pop("e-5")[:2] == (False, 1)
    assert set(settled.values()) == {(True, 1, None)}


def test_the_migrations_build_exactly_the_tables_the_code_declares(deps):
    """Alembic's comparison of the migrated database with ctflow.ledger.tables finds nothing to change:
    a column or table added to the code without its migration fails here, on both databases."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from ctflow.ledger.db import SCHEMA_HEAD
    from ctflow.ledger.tables import Base

    assert deps.ledger.schema_revision() == SCHEMA_HEAD
    with deps.ledger.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
