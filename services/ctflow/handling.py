"""What an event handler sees: its context, its outcomes, its options, and work outside a delivery.

A handler is `handler(ctx) -> Outcome | None`. It changes the ledger through `ctx.tx`,
emits events with `ctx.emit` (written to the outbox in the same transaction) and queues
external side effects with `ctx.after_commit`. Permanently bad input raises `Rejected`
with the reason a person reads in the dead letter; any other exception is transient.
How deliveries reach handlers (decoding, dedup, group commit, dead letters) is the
intake's business (ctflow.intake); nothing here imports it, nor FastAPI.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import Session

from . import failpoints
from .contracts import EVENT_PAYLOADS
from .events import SOURCE_ROOT, Event
from .ledger import outbox, runs
from .topology import EVENTS_TOPIC

if TYPE_CHECKING:
    from .deps import Dependencies

log = logging.getLogger(__name__)
PayloadT = TypeVar("PayloadT", bound=BaseModel)
InboxKey = tuple[str, str]  # (source, id): what the inbox dedupes a delivery on


class Rejected(Exception):
    """Permanently bad input; the message is the reason a person reads in the dead letter."""


@dataclass
class Outcome:
    status: str  # processed | duplicate | ignored | rejected
    detail: str = ""
    run_ids: list[str] = field(default_factory=list)
    dead_letter_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if self.run_ids:
            body["run_ids"] = self.run_ids
        if self.dead_letter_id:
            body["dead_letter_id"] = self.dead_letter_id
        return body


@dataclass
class HandlerContext:
    tx: Session
    deps: Dependencies
    service: str
    event: Event
    payload: BaseModel | None
    prepared: Any = None  # what the handler's `prepare` step returned (see `Handling`)
    run_ids: list[str] = field(default_factory=list)
    outbox_rows: list[outbox.OutboxRow] = field(default_factory=list)
    post_commit: list[Callable[[], object]] = field(default_factory=list)

    def payload_as(self, model: type[PayloadT]) -> PayloadT:
        """The event's data as the model the intake validated it against (a bug if it is not one)."""
        if not isinstance(self.payload, model):
            raise TypeError(f"{self.event.type} carries {type(self.payload).__name__}, not {model.__name__}")
        return self.payload

    def emit(self, event: Event, topic: str = EVENTS_TOPIC) -> None:
        """Queue an outgoing event in this transaction (validated against its schema)."""
        self.outbox_rows.append(_write_event(self.tx, self.service, event, topic))

    def after_commit(self, action: Callable[[], object]) -> None:
        """Run `action` once this transaction has committed (never if it rolls back).

        For external side effects (launching a job): the ledger holds the claim first,
        so reconcile can finish an action a crash interrupted. Failures are logged.
        """
        self.post_commit.append(action)

    @property
    def has_after_commit_work(self) -> bool:
        """Whether what follows the commit may block: actions to run, or events for a bus outside the ledger."""
        return bool(self.post_commit) or (bool(self.outbox_rows) and not self.deps.relay.publishes_in_commit)

    def touched(self, run_id: str) -> None:
        if run_id not in self.run_ids:
            self.run_ids.append(run_id)


Handler = Callable[[HandlerContext], Outcome | None]
Preparer = Callable[["Dependencies", Event], Any]


@dataclass(frozen=True)
class Handling:
    """A handler with the options of how its deliveries are taken.

    - `prepare(deps, event)`: slow, read-only work (reading files from the bucket) done
      first, outside any ledger transaction, so the ledger is never held while it reads;
      it may raise Rejected. The handler finds its result in `ctx.prepared`. A delivery
      the inbox already holds is answered as a duplicate without preparing.
    - `inbox_key(event)`: dedupe on this key instead of the event's own (source, id), for
      one message that can arrive by two routes with different sources (a Pub/Sub push
      and Eventarc's `messagePublished`): keyed on the messageId, the second arrival is a
      duplicate whether the first was processed or dead-lettered. None for an event that
      carries no such key: its own source and id are used then.
    """

    handle: Handler
    prepare: Preparer | None = None
    inbox_key: Callable[[Event], InboxKey | None] | None = None

    @classmethod
    def of(cls, handler: Handler | Handling) -> Handling:
        return handler if isinstance(handler, Handling) else cls(handler)


WORK_EVENT_TYPE = "ctflow.service.work"  # the stand-in cause of work outside a delivery; never published


@contextmanager
def service_work(deps: Dependencies, service: str, what: str) -> Iterator[HandlerContext]:
    """Ledger work a service does on its own (after a delivery's commit, on a reconcile tick).

    It gets the context a handler gets, so events go out the same way: `ctx.emit` checks
    the schema and writes the outbox row and the run's timeline in this transaction; the
    events are published as a handler's are (ctflow.bus.relay), and reconcile sends whatever that misses.
    """
    cause = Event(type=WORK_EVENT_TYPE, source=f"{SOURCE_ROOT}/{service}", id=f"{what}-{uuid.uuid4()}")
    with deps.ledger.transaction() as tx:
        ctx = HandlerContext(tx, deps, service, cause, None)
        yield ctx
    after_commit(ctx)


def after_commit(ctx: HandlerContext) -> None:
    """What follows a committed transaction: publish its outbox rows, then run its queued actions.

    Failures are logged, not raised: the outbox relay publishes what this could not, and
    the committed claims let reconcile finish an interrupted action.
    """
    failpoints.hit("after-commit")
    try:
        ctx.deps.relay.publish_written(ctx.outbox_rows)
    except Exception:  # noqa: BLE001
        log.exception("publishing after commit failed; reconcile will retry")
    for action in ctx.post_commit:
        try:
            action()
        except Exception:  # noqa: BLE001
            log.exception("an after-commit action failed; reconcile will finish it")


def _write_event(tx: Session, service: str, event: Event, topic: str) -> outbox.OutboxRow:
    model = EVENT_PAYLOADS.get(event.type)
    if model is not None:
        model.model_validate(event.data)  # a bug if this fails: let it surface
    row = outbox.add(tx, topic, event)
    if event.subject:
        runs.note_event(tx, event.subject, "emitted", event, service)
    return row
