"""The outbox relay: publish outbox rows after commit, and again from reconcile until sent.

Two ways to publish, chosen once from the bus:
- A bus stored in the ledger's own database (the embedded `LedgerBus`) is written in the
  very transaction that writes the outbox rows (`Ledger.publish_in_transaction`): an
  event is published exactly when it commits, with no window for a crash to leave it
  unsent. After commit the relay only wakes the dispatcher. Reconcile still publishes
  any unsent row (one written without the relay), in the transaction that marks it sent.
- Any other bus (Pub/Sub) is called after the rows are committed; the rows are then
  marked sent, concurrent publishers' rows in one transaction (ctflow.coalescing). A
  crash in between publishes them again from reconcile, which consumers dedupe by
  CloudEvent id. Pub/Sub calls are not batched, so one slow publish never holds up others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import NamedTuple

from sqlalchemy.orm import Session

from ..coalescing import Coalescer
from ..ledger import Ledger, outbox
from ..ledger.outbox import OutboxRow
from ..ledger.tables import OutboxMessage
from . import MessageBus, TransactionalBus

log = logging.getLogger(__name__)


class Settled(NamedTuple):
    """One publisher's outcome: rows sent, and rows that failed with their error."""

    sent: list[int]
    failed: list[tuple[int, str]]


class OutboxRelay:
    """Publishes one ledger's outbox to one bus. A ledger has one relay: the last one built for it
    decides whether its commits publish in the transaction."""

    def __init__(self, ledger: Ledger, bus: MessageBus) -> None:
        self.ledger = ledger
        self.bus = bus
        self._ledger_bus: TransactionalBus | None = (
            bus if isinstance(bus, TransactionalBus) and bus.ledger is ledger else None
        )
        ledger.publish_in_transaction(self._write_to_bus if self._ledger_bus else None)
        # Outside buses: rows published after concurrent commits are marked sent together (group commit).
        self._settling: Coalescer[Settled, None] = Coalescer(self._settle)

    @property
    def publishes_in_commit(self) -> bool:
        """True when events are on the bus once their transaction commits (the bus is in the ledger)."""
        return self._ledger_bus is not None

    def publish(self, *, older_than: timedelta = timedelta(0)) -> int:
        """Publish every unsent row at least `older_than` old (the reconcile step); returns how many."""
        if self._ledger_bus is not None:
            return self._publish_in_ledger(self._ledger_bus, older_than)
        with self.ledger.transaction() as tx:
            rows = outbox.unsent(tx, older_than=older_than)
        return len(self._publish_then_mark(rows))

    def publish_written(self, rows: Sequence[OutboxRow]) -> int:
        """Publish rows this process has just committed, from memory (nothing is read back).

        On the ledger bus they were published in their own commit: this wakes the dispatcher.
        """
        if not rows:
            return 0
        if self._ledger_bus is None:
            return len(self._publish_then_mark(rows))
        self._ledger_bus.notify()
        return len(rows)

    def _write_to_bus(self, tx: Session, rows: list[OutboxRow]) -> None:
        assert self._ledger_bus is not None, "only a bus in the ledger is written in its transactions"
        self._ledger_bus.write(tx, [(row.topic, row.data, row.attributes) for row in rows])

    def _publish_in_ledger(self, bus: TransactionalBus, older_than: timedelta) -> int:
        with self.ledger.transaction() as tx:
            rows = outbox.take_unsent(tx, older_than=older_than)
            self._write_to_bus(tx, rows)
        if rows:
            bus.notify()
        return len(rows)

    def _publish_then_mark(self, rows: Sequence[OutboxRow | OutboxMessage]) -> set[int]:
        sent: list[int] = []
        failed: list[tuple[int, str]] = []
        for row in rows:
            assert row.id is not None, "only rows written to the outbox are published"
            try:
                self.bus.publish(row.topic, row.data, row.attributes)
            except Exception as exc:  # noqa: BLE001 - any failure is retried by reconcile
                log.warning("publishing outbox row %s failed: %s", row.id, exc)
                failed.append((row.id, repr(exc)))
            else:
                sent.append(row.id)
        if sent or failed:
            self._settling.submit(Settled(sent, failed))
        return set(sent)

    def _settle(self, batch: list[Settled]) -> list[None]:
        """Record what concurrent publishers sent and what failed, in one transaction."""
        with self.ledger.transaction() as tx:
            outbox.mark_sent(tx, [row_id for settled in batch for row_id in settled.sent])
            for row_id, error in (failure for settled in batch for failure in settled.failed):
                outbox.mark_failed(tx, row_id, error)
        return [None] * len(batch)
