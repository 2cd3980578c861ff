"""The outbox relay: publish outbox rows after commit, and again from reconcile until sent."""

from __future__ import annotations

import logging
from datetime import timedelta

from ..ledger import Ledger, outbox
from . import MessageBus

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(self, ledger: Ledger, bus: MessageBus) -> None:
        self.ledger = ledger
        self.bus = bus

    def publish(self, ids: list[int] | None = None, *, older_than: timedelta = timedelta(0)) -> int:
        """Publish the given (or all due) unsent rows; returns how many were sent.

        A failure leaves the row unsent for the next reconcile; a crash between publish
        and mark-sent publishes it again, which consumers dedupe by CloudEvent id.
        """
        if ids == []:
            return 0
        with self.ledger.transaction() as tx:
            rows = outbox.unsent(tx, ids=ids, older_than=older_than)
        sent = 0
        for row in rows:
            try:
                self.bus.publish(row.topic, row.data, row.attributes)
            except Exception as exc:  # noqa: BLE001 - any failure is retried by reconcile
                log.warning("publishing outbox row %s failed: %s", row.id, exc)
                with self.ledger.transaction() as tx:
                    outbox.mark_failed(tx, row.id, repr(exc))
                continue
            with self.ledger.transaction() as tx:
                outbox.mark_sent(tx, row.id)
            sent += 1
        return sent
