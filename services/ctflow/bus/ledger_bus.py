"""Embedded bus: topics and subscriptions stored in the ledger database.

Publishing writes the message and one pending delivery per matching subscription in
one transaction; the dispatcher (ctflow.embedded.dispatcher) pushes them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

from ..ledger import Ledger
from ..ledger.tables import BusDelivery, BusMessage
from ..topology import subscriptions_for


class LedgerBus:
    def __init__(self, ledger: Ledger, on_publish: Callable[[], None] | None = None) -> None:
        self.ledger = ledger
        self.on_publish = on_publish  # wakes an in-process dispatcher; polling covers the rest

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        message_id = uuid.uuid4().hex
        with self.ledger.transaction() as tx:
            message = BusMessage(message_id=message_id, topic=topic, data=data, attributes=dict(attributes))
            tx.add(message)
            tx.flush()
            for sub in subscriptions_for(topic, dict(attributes)):
                tx.add(BusDelivery(message_pk=message.id, subscription=sub.name, status="pending"))
        if self.on_publish:
            self.on_publish()
        return message_id
