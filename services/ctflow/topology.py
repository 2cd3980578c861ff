"""Topics and subscriptions: who receives which event, in the one place that says so.

The embedded bus routes by this table; deploy/terraform creates the same Pub/Sub
subscriptions (filtered on the `ce-type` attribute) and the Eventarc trigger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from . import events

EVENTS_TOPIC = "ctflow-events"
HPARAMS_TOPIC = "ctflow-hparams"
STORAGE_TOPIC = "gcs-object-finalized"  # embedded stand-in for Eventarc's GCS source


def publish_url(bus_url: str, topic: str = EVENTS_TOPIC) -> str:
    """Where the embedded stack's bus endpoint (ctflow.embedded.publisher) takes a topic's events."""
    return f"{bus_url.rstrip('/')}/topics/{topic}"


DATASET_LISTENER = "dataset-listener"
HPARAM_CONSUMER = "hparam-consumer"
JOB_LAUNCHER = "job-launcher"
COMPLETION_HANDLER = "completion-handler"
DEPLOYER = "deployer"
STATUS_API = "status-api"
SERVICES = (DATASET_LISTENER, HPARAM_CONSUMER, JOB_LAUNCHER, COMPLETION_HANDLER, DEPLOYER, STATUS_API)


@dataclass(frozen=True)
class Subscription:
    name: str
    topic: str
    service: str
    event_types: frozenset[str] | None = None  # None: every message on the topic
    # "pubsub-push": Pub/Sub push envelope; "cloudevent": HTTP binary CloudEvent (Eventarc).
    delivery: Literal["pubsub-push", "cloudevent"] = "pubsub-push"

    def wants(self, attributes: dict[str, str]) -> bool:
        return self.event_types is None or attributes.get("ce-type") in self.event_types


SUBSCRIPTIONS = (
    Subscription("dataset-listener-gcs", STORAGE_TOPIC, DATASET_LISTENER, delivery="cloudevent"),
    Subscription("hparam-consumer-push", HPARAMS_TOPIC, HPARAM_CONSUMER),
    # The job-launcher also hears completions: a finished job frees a slot for a queued run.
    Subscription(
        "job-launcher-push",
        EVENTS_TOPIC,
        JOB_LAUNCHER,
        frozenset({events.DATASET_ARRIVED, events.TRAINING_REQUESTED, events.TRAINING_COMPLETED}),
    ),
    Subscription("completion-handler-push", EVENTS_TOPIC, COMPLETION_HANDLER, frozenset({events.TRAINING_COMPLETED})),
    # The deployer (model.registered) subscribes here as its handlers land.
)


def subscriptions_for(topic: str, attributes: dict[str, str]) -> list[Subscription]:
    return [s for s in SUBSCRIPTIONS if s.topic == topic and s.wants(attributes)]
