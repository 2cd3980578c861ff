"""The message bus port: publish a message to a topic.

Adapters: `LedgerBus` (embedded, durable in the ledger database, pushed over HTTP by
the dispatcher exactly as Pub/Sub push does) and `PubSubBus` (google-cloud-pubsub).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class MessageBus(Protocol):
    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """Publish durably; returns the message id."""
