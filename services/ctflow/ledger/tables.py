"""Table definitions (SQLAlchemy 2 ORM). Migrations under migrations/ create them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from .records import DatasetRef, EvaluationRecord, JobRecord, Trigger


def utcnow() -> datetime:
    return datetime.now(UTC)


def table_of(model: type[DeclarativeBase]) -> Table:
    """A mapped class's Table (SQLAlchemy types `__table__` as any FromClause)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every database (SQLite stores no zone; this gives it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None and value.tzinfo else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    type_annotation_map = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: UtcDateTime(),
        Trigger: JSON,
        DatasetRef: JSON,
        JobRecord: JSON,
        EvaluationRecord: JSON,
    }


class InboxEntry(Base):
    """One row per event a consumer received; the unique key turns redelivery into a no-op."""

    __tablename__ = "inbox"
    __table_args__ = (UniqueConstraint("consumer", "source", "event_id", name="uq_inbox_event"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(512))
    event_id: Mapped[str] = mapped_column(String(256))
    event_type: Mapped[str] = mapped_column(String(256))
    outcome: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_pipeline_state", "pipeline", "state"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(24), index=True)
    trigger: Mapped[Trigger]
    dataset_version: Mapped[str | None] = mapped_column(String(256))
    dataset: Mapped[DatasetRef | None]
    hyperparameters: Mapped[dict[str, Any]]
    trace_id: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    job: Mapped[JobRecord | None]
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any] | None]
    evaluation: Mapped[EvaluationRecord | None]
    rollout_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TimelineEntry(Base):
    """What happened to a run, in order: events received or emitted, state changes."""

    __tablename__ = "run_timeline"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))  # received | emitted | state
    name: Mapped[str] = mapped_column(String(256))  # event type or state
    service: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(256))
    detail: Mapped[dict[str, Any] | None]


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("bucket", "object_name", "generation", name="uq_dataset_generation"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[str] = mapped_column(String(256))
    bucket: Mapped[str] = mapped_column(String(256))
    object_name: Mapped[str] = mapped_column(String(1024))
    generation: Mapped[str] = mapped_column(String(64))
    uri: Mapped[str] = mapped_column(String(1100))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    files: Mapped[list[Any]]
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[str | None] = mapped_column(String(64))
    arrived_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeadLetter(Base):
    """A request that could not be processed, kept whole with the reason, replayable."""

    __tablename__ = "dead_letters"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(512))
    event_id: Mapped[str] = mapped_column(String(256))
    event_type: Mapped[str | None] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)
    request: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), index=True)  # open | replayed
    replays: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DeliveryFailure(Base):
    """How many times in a row handling one event failed for a consumer, and the last error.

    Written in its own transaction after the failed one rolled back; when the count reaches
    the limit the event becomes a dead letter (ctflow.intake) and its row is removed.
    """

    __tablename__ = "delivery_failures"
    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(512), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    attempts: Mapped[int]
    last_error: Mapped[str] = mapped_column(Text)
    first_failed_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_failed_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxMessage(Base):
    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    topic: Mapped[str] = mapped_column(String(256))
    event_id: Mapped[str] = mapped_column(String(256))
    event_type: Mapped[str] = mapped_column(String(256))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    attributes: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class BusMessage(Base):
    """Embedded bus: a message published to a topic (what Pub/Sub stores)."""

    __tablename__ = "bus_messages"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    topic: Mapped[str] = mapped_column(String(256))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    attributes: Mapped[dict[str, Any]]
    published_at: Mapped[datetime] = mapped_column(default=utcnow)


class BusDelivery(Base):
    """Embedded bus: one message owed to one subscription, pushed until acked or dead."""

    __tablename__ = "bus_deliveries"
    __table_args__ = (
        UniqueConstraint("message_pk", "subscription", name="uq_delivery"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("bus_messages.id"))
    subscription: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))  # pending | acked | dead
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LeaseRow(Base):
    """Who may do a piece of long work (launch a run's job, evaluate it, drive a rollout), until when.

    One row per lease name; ctflow.ledger.leases claims, renews, releases and fences it.
    """

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64))  # the holder's token; None: free
    expires_at: Mapped[datetime | None]
    claims: Mapped[int]  # how many times it was claimed: the guarded work's attempts
    claimed_at: Mapped[datetime | None]


class RolloutRow(Base):
    """A model version's rollout into one environment (the deployer's): its plan, where it is, when it ended.

    `state` is the rollout decision's state (deployer.decide.State as JSON); `plan` is the plan as it
    was when the rollout began, so a spec edited mid-rollout does not change its rules half-way.
    `serving` is the canary's revision and archive (deployer.serving); `pending` the actions of the
    last decision not yet carried out (kept with the decision, cleared once done, so a crash between
    deciding and acting is finished by the next tick); `command` a person's promote/abort/pause/resume
    waiting for the next tick; `superseded_by` a newer version registered for the same environment.
    """

    __tablename__ = "rollouts"
    __table_args__ = (
        UniqueConstraint("pipeline", "environment", "candidate_version", name="uq_rollouts_candidate"),
        Index("ix_rollouts_pipeline_environment_phase", "pipeline", "environment", "phase"),
    )
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(128))
    environment: Mapped[str] = mapped_column(String(64))
    candidate_version: Mapped[str] = mapped_column(String(32))
    stable_version: Mapped[str | None] = mapped_column(String(32))
    run_id: Mapped[str | None] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(24))
    plan: Mapped[dict[str, Any]]
    state: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    ended_at: Mapped[datetime | None]
    serving: Mapped[dict[str, Any] | None]
    pending: Mapped[list[Any] | None]
    command: Mapped[dict[str, Any] | None]
    superseded_by: Mapped[str | None] = mapped_column(String(32))


class RolloutDecision(Base):
    """One tick's decision on a rollout, with the figures it was made on (append-only)."""

    __tablename__ = "rollout_decisions"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    rollout_id: Mapped[str] = mapped_column(ForeignKey("rollouts.id"), index=True)
    at: Mapped[datetime]
    phase: Mapped[str] = mapped_column(String(24))
    weight: Mapped[int]
    verdict: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    figures: Mapped[dict[str, Any]]
