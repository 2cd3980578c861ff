"""The event vocabulary: ctflow's CloudEvents 1.0 types and the one Event value handlers see.

External events keep Google's types; ctflow's own are `ctflow.<noun>.<verb>.v1` with
one JSON Schema each under schemas/events/. Every ctflow event's subject is the run
id, and it carries a W3C `traceparent` whose trace id is the run's, so one run is one
trace across services.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

PREFIX = "ctflow"
SOURCE_ROOT = "//ctflow"

GCS_OBJECT_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"

DATASET_ARRIVED = "ctflow.dataset.arrived.v1"
TRAINING_REQUESTED = "ctflow.training.requested.v1"
TRAINING_STARTED = "ctflow.training.started.v1"
TRAINING_COMPLETED = "ctflow.training.completed.v1"
MODEL_REGISTERED = "ctflow.model.registered.v1"
MODEL_REJECTED = "ctflow.model.rejected.v1"
ROLLOUT_STARTED = "ctflow.rollout.started.v1"
ROLLOUT_ADVANCED = "ctflow.rollout.advanced.v1"
ROLLOUT_PROMOTED = "ctflow.rollout.promoted.v1"
ROLLOUT_ROLLED_BACK = "ctflow.rollout.rolled_back.v1"
ROLLOUT_SUPERSEDED = "ctflow.rollout.superseded.v1"
ROLLOUT_PAUSED = "ctflow.rollout.paused.v1"
ROLLOUT_RESUMED = "ctflow.rollout.resumed.v1"
ROLLOUT_CONFLICT = "ctflow.rollout.conflict.v1"

# The training job's report (the trainer sends it; the job-launcher re-sends it, or a failure
# in its place, under the same id, so the completion-handler's inbox sees one event per run).
TRAINER_SOURCE = f"{SOURCE_ROOT}/trainer"
COMPLETION_FILE = "completion.json"  # the report as the job leaves it next to its model (AIP_MODEL_DIR)


def training_completed_id(run_id: str) -> str:
    return f"training-completed-{run_id}"


CTFLOW_TYPES = (
    DATASET_ARRIVED,
    TRAINING_REQUESTED,
    TRAINING_STARTED,
    TRAINING_COMPLETED,
    MODEL_REGISTERED,
    MODEL_REJECTED,
    ROLLOUT_STARTED,
    ROLLOUT_ADVANCED,
    ROLLOUT_PROMOTED,
    ROLLOUT_ROLLED_BACK,
    ROLLOUT_SUPERSEDED,
    ROLLOUT_PAUSED,
    ROLLOUT_RESUMED,
    ROLLOUT_CONFLICT,
)


@dataclass(frozen=True)
class Event:
    """A CloudEvent as handlers see it: attributes plus JSON data, transport already removed."""

    type: str
    source: str
    id: str
    data: Any = None
    subject: str | None = None
    time: str | None = None
    extensions: dict[str, str] = field(default_factory=dict)

    @property
    def traceparent(self) -> str | None:
        return self.extensions.get("traceparent")

    def attributes(self) -> dict[str, str]:
        """CloudEvent context attributes (binary-mode names without the `ce-` prefix)."""
        attrs = {"specversion": "1.0", "type": self.type, "source": self.source, "id": self.id}
        if self.subject is not None:
            attrs["subject"] = self.subject
        if self.time is not None:
            attrs["time"] = self.time
        attrs.update(self.extensions)
        return attrs


# Outbound encodings, one implementation for the services and the trainer (stdlib only). Inbound
# requests are decoded by ctflow.codec (the CloudEvents SDK, plus what it does not check).
DATA_CONTENT_TYPE = "application/json"
# CloudEvents HTTP binding 3.1.3.2: printable ASCII but space, '"' and '%' go as is; the rest percent-encoded.
_HEADER_SAFE = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in ' "%')


def json_data(event: Event) -> bytes:
    return json.dumps(event.data, separators=(",", ":")).encode()


def to_http_binary(event: Event) -> tuple[dict[str, str], bytes]:
    """CloudEvents HTTP binary mode (as Eventarc delivers): `ce-` headers, JSON body."""
    headers = {f"ce-{k}": quote(v, safe=_HEADER_SAFE) for k, v in event.attributes().items()}
    headers["content-type"] = DATA_CONTENT_TYPE
    return headers, json_data(event)


def to_pubsub(event: Event) -> tuple[bytes, dict[str, str]]:
    """CloudEvents Pub/Sub binding, binary mode: JSON data plus `ce-` attributes."""
    attributes = {f"ce-{k}": v for k, v in event.attributes().items()}
    attributes["content-type"] = DATA_CONTENT_TYPE
    return json_data(event), attributes


def to_structured(event: Event) -> bytes:
    """Structured-mode JSON (how a trainer leaves its report as completion.json)."""
    document = {**event.attributes(), "datacontenttype": DATA_CONTENT_TYPE, "data": event.data}
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trace_id_for(run_id: str) -> str:
    """The run's trace id: stable, so every service joins the same trace without lookups."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:32]


def traceparent_for(run_id: str) -> str:
    return f"00-{trace_id_for(run_id)}-{secrets.token_hex(8)}-01"


def trace_id_of(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def run_event(
    event_type: str, service: str, run_id: str, data: dict[str, Any], *, event_id: str | None = None
) -> Event:
    """A ctflow event about one run: subject = run id, traceparent in the run's trace."""
    return Event(
        type=event_type,
        source=f"{SOURCE_ROOT}/{service}",
        id=event_id or str(uuid.uuid4()),
        subject=run_id,
        time=now_iso(),
        data=data,
        extensions={"traceparent": traceparent_for(run_id)},
    )
