"""Topics and subscriptions: who receives which event and which function handles it, in the one place that says so.

The embedded bus routes by this table; deploy/terraform creates the same Pub/Sub
subscriptions (filtered on the `ce-type` attribute) and the Eventarc trigger; each
service's intake takes its handlers from here (ctflow.service), by reference, so
naming them imports nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
    # event type -> "module:attribute" of what handles it (a handler, or a ctflow.handling.Handling).
    handlers: Mapping[str, str] = field(compare=False)
    # True: only the messages whose `ce-type` attribute a handler takes. False: every message on the
    # topic (plain Pub/Sub messages carry no ce-type; the intake dead-letters what no handler takes).
    filtered: bool = True
    # "pubsub-push": Pub/Sub push envelope; "cloudevent": HTTP binary CloudEvent (Eventarc).
    delivery: Literal["pubsub-push", "cloudevent"] = "pubsub-push"

    @property
    def event_types(self) -> frozenset[str] | None:
        """The ce-type values delivered; None: every message on the topic."""
        return frozenset(self.handlers) if self.filtered else None

    def wants(self, attributes: Mapping[str, str]) -> bool:
        return not self.filtered or attributes.get("ce-type") in self.handlers


SUBSCRIPTIONS = (
    # Eventarc's GCS trigger (and the embedded bucket watcher) sends only object-finalized events.
    Subscription(
        "dataset-listener-gcs",
        STORAGE_TOPIC,
        DATASET_LISTENER,
        {events.GCS_OBJECT_FINALIZED: "dataset_listener.handlers:OBJECT_FINALIZED"},
        filtered=False,
        delivery="cloudevent",
    ),
    # Hyperparameter messages are plain Pub/Sub messages; the push envelope decodes as messagePublished.
    Subscription(
        "hparam-consumer-push",
        HPARAMS_TOPIC,
        HPARAM_CONSUMER,
        {events.PUBSUB_MESSAGE_PUBLISHED: "hparam_consumer.handlers:MESSAGE_PUBLISHED"},
        filtered=False,
    ),
    # The job-launcher also hears completions: a finished job frees a slot for a queued run.
    Subscription(
        "job-launcher-push",
        EVENTS_TOPIC,
        JOB_LAUNCHER,
        {
            events.DATASET_ARRIVED: "job_launcher.handlers:on_dataset_arrived",
            events.TRAINING_REQUESTED: "job_launcher.handlers:on_training_requested",
            events.TRAINING_COMPLETED: "job_launcher.handlers:on_training_completed",
        },
    ),
    Subscription(
        "completion-handler-push",
        EVENTS_TOPIC,
        COMPLETION_HANDLER,
        {events.TRAINING_COMPLETED: "completion_handler.handlers:on_training_completed"},
    ),
    Subscription(
        "deployer-push",
        EVENTS_TOPIC,
        DEPLOYER,
        {events.MODEL_REGISTERED: "deployer.handlers:on_model_registered"},
    ),
)


def subscriptions_for(topic: str, attributes: Mapping[str, str]) -> list[Subscription]:
    return [s for s in SUBSCRIPTIONS if s.topic == topic and s.wants(attributes)]


def handlers_for(service: str) -> dict[str, str]:
    """The event types `service` takes, each with the reference of its handler."""
    refs: dict[str, str] = {}
    for subscription in SUBSCRIPTIONS:
        if subscription.service == service:
            for event_type, ref in subscription.handlers.items():
                if refs.setdefault(event_type, ref) != ref:
                    raise ValueError(f"{service} names two handlers for {event_type}: {refs[event_type]} and {ref}")
    return refs
