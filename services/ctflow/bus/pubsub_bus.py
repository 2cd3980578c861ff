"""Google Cloud Pub/Sub as the bus (google-cloud-pubsub, imported on first publish)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class PubSubBus:
    def __init__(self, project: str, publisher: Any = None, timeout: float = 30.0) -> None:
        self.project = project
        self._publisher = publisher
        self.timeout = timeout

    @property
    def publisher(self) -> Any:
        if self._publisher is None:
            from google.cloud.pubsub_v1 import PublisherClient

            self._publisher = PublisherClient()
        return self._publisher

    def topic_path(self, topic: str) -> str:
        return topic if topic.startswith("projects/") else f"projects/{self.project}/topics/{topic}"

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        future = self.publisher.publish(self.topic_path(topic), data, **dict(attributes))
        return str(future.result(timeout=self.timeout))
