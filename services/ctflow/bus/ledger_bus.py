"""Embedded bus: topics and subscriptions stored in the ledger database.

Publishing writes the message and one pending delivery per matching subscription in
one transaction; the dispatcher (ctflow.embedded.dispatcher) pushes them. Because the
bus lives in the ledger, the outbox relay can `write` messages inside the very
transaction that marks their outbox rows sent, then `notify` once it has committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy.orm import Session

from ..ledger import Ledger
from ..ledger.sql import insert_many
from ..ledger.tables import BusDelivery, BusMessage, table_of, utcnow
from ..topology import subscriptions_for
from . import Message

_MESSAGES = table_of(BusMessage)
_DELIVERIES = table_of(BusDelivery)


class LedgerBus:
    def __init__(self, ledger: Ledger, on_publish: Callable[[], None] | None = None) -> None:
        self.ledger = ledger
        self.on_publish = on_publish  # wakes an in-process dispatcher; polling covers the rest

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        with self.ledger.transaction() as tx:
            [message_id] = self.write(tx, [(topic, data, attributes)])
        self.notify()
        return message_id

    def write(self, tx: Session, messages: Sequence[Message]) -> list[str]:
        """Store messages and their pending deliveries in `tx`; call `notify` after it commits."""
        if not messages:
            return []
        now = utcnow()
        message_ids = [uuid.uuid4().hex for _ in messages]
        pks: dict[str, int] = dict(
            insert_many(
                tx,
                _MESSAGES,
                [  # pks come back in no set order: matched on message ids
                    dict(message_id=mid, topic=topic, data=data, attributes=dict(attributes), published_at=now)
                    for mid, (topic, data, attributes) in zip(message_ids, messages, strict=True)
                ],
                returning=("message_id", "id"),
            )
        )
        deliveries = [
            dict(
                message_pk=pks[mid],
                subscription=sub.name,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                updated_at=now,
            )
            for mid, (topic, _, attributes) in zip(message_ids, messages, strict=True)
            for sub in subscriptions_for(topic, dict(attributes))
        ]
        insert_many(tx, _DELIVERIES, deliveries)
        return message_ids

    def notify(self) -> None:
        if self.on_publish:
            self.on_publish()
