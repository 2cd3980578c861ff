"""The outbox relay: publish outbox rows after commit, and again from reconcile until sent.

Two ways to publish, chosen once from the bus:
- A bus stored in the ledger's own database (the embedded `LedgerBus`) is written in the
  same transaction that marks the rows sent: one transaction, and a row is published
  exactly once even if two relays race for it or the process dies half-way.
- Any other bus (Pub/Sub) is called after the rows are committed; the rows are then
  marked sent in one statement. A crash in between publishes them again from
  reconcile, which consumers dedupe by CloudEvent id.

Right after commit, concurrent requests' rows for the ledger bus are coalesced
(ctflow.bus.coalescing): whoever gets the turn publishes every row queued so far in one
transaction. Pub/Sub calls are not batched, so one slow publish never holds up others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from ..ledger import Ledger, outbox
from ..ledger.outbox import OutboxRow
from ..ledger.tables import OutboxMessage
from . import MessageBus
from .coalescing import Coalescer

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(self, ledger: Ledger, bus: MessageBus) -> None:
        self.ledger = ledger
        self.bus = bus
        self._in_ledger = getattr(bus, "ledger", None) is ledger and hasattr(bus, "write")
        self._after_commit: Coalescer[int, set[int]] = Coalescer(
            lambda ids: self._publish_in_ledger(ids, timedelta(0)))

    def publish(self, *, older_than: timedelta = timedelta(0)) -> int:
        """Publish every unsent row at least `older_than` old (the reconcile step); returns how many."""
        if self._in_ledger:
            return len(self._publish_in_ledger(None, older_than))
        with self.ledger.transaction() as tx:
            rows = outbox.unsent(tx, older_than=older_than)
        return len(self._publish_then_mark(rows))

    def publish_written(self, rows: Sequence[OutboxRow]) -> int:
        """Publish rows this process has just committed, from memory (nothing is read back).

        On the ledger bus, rows other requests committed meanwhile go out in the same batch.
        """
        if not rows:
            return 0
        if not self._in_ledger:
            return len(self._publish_then_mark(rows))
        sent = self._after_commit.submit([row.id for row in rows])
        return sum(1 for row in rows if row.id in sent)

    def _publish_in_ledger(self, ids: Sequence[int] | None, older_than: timedelta) -> set[int]:
        bus: Any = self.bus
        with self.ledger.transaction() as tx:
            rows = outbox.take_unsent(tx, ids=ids, older_than=older_than)
            bus.write(tx, [(row.topic, row.data, row.attributes) for row in rows])
        if rows:
            bus.notify()
        return {row.id for row in rows}

    def _publish_then_mark(self, rows: Sequence[OutboxRow | OutboxMessage]) -> set[int]:
        sent: list[int] = []
        failed: list[tuple[int, str]] = []
        for row in rows:
            try:
                self.bus.publish(row.topic, row.data, row.attributes)
            except Exception as exc:  # noqa: BLE001 - any failure is retried by reconcile
                log.warning("publishing outbox row %s failed: %s", row.id, exc)
                failed.append((row.id, repr(exc)))
            else:
                sent.append(row.id)
        if sent or failed:
            with self.ledger.transaction() as tx:
                outbox.mark_sent(tx, sent)
                for row_id, error in failed:
                    outbox.mark_failed(tx, row_id, error)
        return set(sent)
