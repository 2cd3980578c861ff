"""The message bus port: publish a message to a topic.

Adapters: `LedgerBus` (embedded, durable in the ledger database, pushed over HTTP by
the dispatcher exactly as Pub/Sub push does) and `PubSubBus` (google-cloud-pubsub).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..ledger import Ledger

Message = tuple[str, bytes, Mapping[str, str]]  # topic, data, attributes


class MessageBus(Protocol):
    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """Publish durably; returns the message id."""


@runtime_checkable
class TransactionalBus(MessageBus, Protocol):
    """A bus stored in a ledger's own database: messages can be written in the ledger's transactions."""

    ledger: Ledger

    def write(self, tx: Session, messages: Sequence[Message]) -> list[str]:
        """Store messages in `tx` (they are published when it commits); returns their ids."""

    def notify(self) -> None:
        """Tell whoever delivers messages that committed ones are waiting."""
