"""The one path every inbound event takes: decode, dedupe, handle, dead-letter, publish.

- A duplicate (same consumer, source and id already in the inbox) is acknowledged with
  no effect. Handlers add their own dedup keys (an object generation) the same way.
- Permanently bad input raises `Rejected`: the handler's work is rolled back, and the
  full request is stored as a dead letter with the reason; the sender gets a 2xx.
- Any other exception is transient: nothing is committed, and the caller answers 5xx
  so Pub/Sub retries. The failure is counted per event (ctflow.ledger.failures): an event
  whose handling fails `max_handling_failures` times in a row (a bug, an input the code
  cannot cope with) is kept as a dead letter with the last error and answered 2xx.
- The handler's state, inbox row and outgoing events commit together; the outbox is
  published in that commit (embedded bus) or right after it (Pub/Sub), and again by
  reconcile until sent (ctflow.bus.relay).
- Concurrent deliveries share transactions (group commit, ctflow.coalescing): the
  deliveries queued while one batch is written are handled one after another in the
  next batch's single transaction, exactly as if each had its own. If any of them
  fails, the batch is rolled back and each delivery is handled again on its own, so
  one bad event never affects another.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from . import failpoints, logs
from .coalescing import Coalescer
from .codec import MalformedRequest, decode_request
from .contracts import EVENT_PAYLOADS, explain
from .deps import Dependencies
from .events import SOURCE_ROOT, Event, trace_id_of
from .ledger import dead_letters, failures, inbox, outbox, runs
from .ledger.db import data_error_reason
from .ledger.tables import DeadLetter
from .service import MAX_BODY
from .topology import EVENTS_TOPIC

log = logging.getLogger(__name__)
PayloadT = TypeVar("PayloadT", bound=BaseModel)

UNPARSED_SOURCE = "ctflow:unparsed-request"
UNPARSED_TYPE = "ctflow.unparsed-request"  # the stand-in event type of a request that is not an event
INLINE_DECODE_BYTES = 64 * 1024  # larger bodies are decoded in a worker thread, off the event loop
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-serverless-authorization"})


# The database could not do it just now (connection lost, lock or serialization conflict,
# deadlock): the DB-API's errors "not necessarily under the control of the programmer".
_DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)


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
    prepared: Any = None  # what the handler's `prepare` step returned (see `prepared_by`)
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
Preparer = Callable[[Dependencies, Event], Any]


def prepared_by(prepare: Preparer) -> Callable[[Handler], Handler]:
    """Give a handler slow, read-only work (reading files from the bucket) to do before its transaction.

    `prepare(deps, event)` runs first, outside any ledger transaction, so the ledger is never
    held while it reads; it may raise Rejected. The handler finds its result in `ctx.prepared`.
    A delivery the inbox already holds is answered as a duplicate without preparing.
    """

    def attach(handler: Handler) -> Handler:
        handler.prepare = prepare  # type: ignore[attr-defined]
        return handler

    return attach


InboxKey = tuple[str, str]  # (source, id): what the inbox dedupes a delivery on


def deduplicated_by(key: Callable[[Event], InboxKey | None]) -> Callable[[Handler], Handler]:
    """Dedupe a handler's deliveries on `key(event)` instead of the event's own (source, id).

    For one message that can arrive by two routes with different sources (a Pub/Sub push
    and Eventarc's `messagePublished`): keyed on the messageId, the second arrival is a
    duplicate whether the first was processed or dead-lettered. `key` returns None for an
    event that carries no such key; the event's own source and id are used then.
    """

    def attach(handler: Handler) -> Handler:
        handler.inbox_key = key  # type: ignore[attr-defined]
        return handler

    return attach


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


def _duplicate(source: str, event_id: str) -> Outcome:
    return Outcome("duplicate", f"event {event_id} from {source} was already received")


def _about(event: Event) -> AbstractContextManager[None]:
    """Log lines name the event, its run and its trace."""
    run_id = event.subject if event.type.startswith("ctflow.") else None
    return logs.bind(event_id=event.id, run_id=run_id, trace_id=trace_id_of(event.traceparent))


def stored_request(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The request as kept in a dead letter: everything but credentials."""
    kept = body[:MAX_BODY]
    try:
        text, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode(), "base64"
    return {
        "headers": {k.lower(): v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS},
        "body": text,
        "encoding": encoding,
        "size": len(body),
        "truncated": len(kept) < len(body),
    }


def request_body(stored: Mapping[str, Any]) -> bytes:
    raw = stored["body"]
    return base64.b64decode(raw) if stored.get("encoding") == "base64" else raw.encode("utf-8")


@dataclass(frozen=True)
class _Delivery:
    """A decoded event and the handler it goes to."""

    event: Event
    handler: Handler
    key: InboxKey  # what the inbox dedupes it on
    replay_of: str | None
    headers: Mapping[str, str]
    body: bytes
    prepared: Any = None

    @property
    def prepares_first(self) -> bool:
        """Whether the handler has slow read-only work to do before its transaction (see `prepared_by`)."""
        return hasattr(self.handler, "prepare")


@dataclass(frozen=True)
class _Refusal:
    """A request no handler can take; it becomes a dead letter."""

    event: Event  # for a request with no usable event id, a stand-in (see `unparsed`)
    reason: str
    headers: Mapping[str, str]
    body: bytes
    replay_of: str | None

    @property
    def key(self) -> InboxKey:
        return self.event.source, self.event.id

    @classmethod
    def unparsed(cls, headers: Mapping[str, str], body: bytes, reason: str, replay_of: str | None) -> _Refusal:
        """A request with no usable event id to dedupe on: a digest of its CloudEvent headers (a
        binary-mode event's attributes, the same on every redelivery) and body stands in for one."""
        attributes = sorted((k.lower(), v) for k, v in headers.items() if k.lower().startswith("ce-"))
        digest = hashlib.sha256(repr(attributes).encode() + b"\n" + body).hexdigest()
        stand_in = Event(type=UNPARSED_TYPE, source=UNPARSED_SOURCE, id=digest)
        return cls(stand_in, reason, headers, body, replay_of)


Handled = tuple[Outcome, HandlerContext | None] | Exception  # a delivery's result, or why it failed
MAX_BATCH = 64  # deliveries per group-commit transaction
# How long a batch waits to be as full as the last one (ctflow.coalescing). Measured with 16
# concurrent senders: without it every other batch was one early delivery on its own, and
# 2 ms gave full batches and 20-25% more events/s; p50 fell, since no one waited behind a lone write.
LINGER_SECONDS = 0.002


class Intake:
    def __init__(self, service: str, handlers: Mapping[str, Handler], deps: Dependencies) -> None:
        self.service = service
        self.handlers = dict(handlers)
        self.deps = deps
        # One batch at a time, on PostgreSQL too: measured with 16 concurrent deliveries, four
        # concurrent batches halved throughput (smaller batches, more statements per event).
        self._batches: Coalescer[_Delivery, Handled] = Coalescer(
            self._handle_batch, max_batch=MAX_BATCH, linger_seconds=LINGER_SECONDS
        )

    def receive(self, headers: Mapping[str, str], body: bytes, *, replay_of: str | None = None) -> Outcome:
        """Handle one delivery, blocking this thread until it is settled."""
        return self._handle_routed(self._route(headers, body, replay_of))

    async def receive_async(self, headers: Mapping[str, str], body: bytes, *, replay_of: str | None = None) -> Outcome:
        """`receive` for the event loop: a plain delivery waits for its batch without holding a thread.

        Whatever may block (a large body's decoding, a handler's `prepare`, a dead letter's
        transaction, publishing after commit) runs in the thread pool.
        """
        if len(body) > INLINE_DECODE_BYTES:
            return await run_in_threadpool(self.receive, headers, body, replay_of=replay_of)
        routed = self._route(headers, body, replay_of)
        if isinstance(routed, _Refusal) or routed.prepares_first:
            return await run_in_threadpool(self._handle_routed, routed)
        with _about(routed.event):
            handled = await self._batches.submit_async(routed)
            if isinstance(handled, Exception) or (handled[1] is not None and handled[1].has_after_commit_work):
                return await run_in_threadpool(self._settle, routed, handled)
            return self._settle(routed, handled)

    def _handle_routed(self, routed: _Delivery | _Refusal) -> Outcome:
        with _about(routed.event):
            delivery = self._prepare(routed)
            if isinstance(delivery, Outcome):
                return delivery
            return self._settle(delivery, self._batches.submit(delivery))

    def _route(self, headers: Mapping[str, str], body: bytes, replay_of: str | None) -> _Delivery | _Refusal:
        """Decode the request and find its handler (no I/O); a refusal says why it cannot be handled."""
        limit = self.deps.settings.max_request_bytes
        if len(body) > limit:
            return _Refusal.unparsed(
                headers, body, f"request body is {len(body)} bytes, over the {limit}-byte limit", replay_of
            )
        try:
            event = decode_request(headers, body)
        except MalformedRequest as exc:
            return _Refusal.unparsed(headers, body, str(exc), replay_of)
        if unkeepable := inbox.unkeepable_key(event.source, event.id, event.type):
            return _Refusal.unparsed(headers, body, unkeepable, replay_of)
        handler = self.handlers.get(event.type)
        if handler is None:
            handled = ", ".join(sorted(self.handlers)) or "nothing yet"
            reason = f"{self.service} does not handle events of type {event.type!r}; it handles {handled}"
            return _Refusal(event, reason, headers, body, replay_of)
        keyed = getattr(handler, "inbox_key", None)
        key: InboxKey = (keyed(event) if keyed else None) or (event.source, event.id)
        if key != (event.source, event.id) and (unkeepable := inbox.unkeepable_key(*key, event.type)):
            return _Refusal.unparsed(headers, body, unkeepable, replay_of)
        return _Delivery(event, handler, key, replay_of, headers, body)

    def _prepare(self, routed: _Delivery | _Refusal) -> _Delivery | Outcome:
        """Dead-letter a refusal; run a handler's `prepare` step, outside any transaction."""
        if isinstance(routed, _Refusal):
            return self._reject(routed, routed.reason)
        if not routed.prepares_first:
            return routed
        if not routed.replay_of and self._received(routed.key):
            return _duplicate(*routed.key)
        try:
            return replace(routed, prepared=routed.handler.prepare(self.deps, routed.event))  # type: ignore[attr-defined]
        except Rejected as exc:
            return self._reject(routed, str(exc))
        except Exception as exc:  # noqa: BLE001 - counted, then raised unless it keeps happening
            return self._failed(routed, exc)

    def _settle(self, delivery: _Delivery, handled: Handled) -> Outcome:
        """A handled delivery's answer: dead-letter it if rejected, count and re-raise a transient
        failure, or publish what it committed and run its after-commit actions."""
        if isinstance(handled, Rejected):
            return self._reject(delivery, str(handled))
        if isinstance(handled, Exception):
            return self._failed(delivery, handled)
        outcome, ctx = handled
        if ctx is not None:
            after_commit(ctx)
        log.info(
            "%s %s: %s", delivery.event.type, delivery.event.id, outcome.status, extra=logs.fields(**outcome.to_json())
        )
        return outcome

    def _handle_batch(self, deliveries: list[_Delivery]) -> list[Handled]:
        """Handle deliveries in one transaction; if any fails, each again in its own."""
        if len(deliveries) > 1:
            try:
                with self.deps.ledger.transaction() as tx:
                    return list(self._handle_all(tx, deliveries))
            except Exception:  # noqa: BLE001 - rolled back; the deliveries one by one say which failed
                log.debug("a batch of %d deliveries failed; handling each on its own", len(deliveries))
        return [self._handle_alone(delivery) for delivery in deliveries]

    def _handle_alone(self, delivery: _Delivery) -> Handled:
        try:
            with self.deps.ledger.transaction() as tx:
                return self._handle_all(tx, [delivery])[0]
        except DataError as exc:  # the database refuses what this event carries, and would on every redelivery
            return Rejected(f"the ledger cannot store what this event carries: {data_error_reason(exc)}")
        except Exception as exc:  # noqa: BLE001 - handed back to the delivery's caller
            return exc

    def _handle_all(self, tx: Session, deliveries: list[_Delivery]) -> list[tuple[Outcome, HandlerContext | None]]:
        """Claim every delivery's inbox key in one statement, then run the handler of each new one, in order."""
        letters = {place: self._reopen(tx, d.replay_of, *d.key) for place, d in enumerate(deliveries) if d.replay_of}
        new = inbox.claim_many(tx, self.service, [(*d.key, d.event.type) for d in deliveries])
        return [
            self._handle(tx, delivery, letters.get(place)) if new[place] else (_duplicate(*delivery.key), None)
            for place, delivery in enumerate(deliveries)
        ]

    def _handle(
        self, tx: Session, delivery: _Delivery, letter: DeadLetter | None
    ) -> tuple[Outcome, HandlerContext | None]:
        """Run the handler of a claimed delivery; `letter` is the dead letter it replays, if any."""
        event = delivery.event
        with _about(event):
            ctx = HandlerContext(tx, self.deps, self.service, event, self._payload(event), prepared=delivery.prepared)
            outcome = delivery.handler(ctx) or Outcome("processed")
            outcome.run_ids = outcome.run_ids or ctx.run_ids
            if outcome.status != "processed":
                inbox.set_outcome(tx, self.service, *delivery.key, outcome.status)
            if letter is not None:
                letter.status, letter.replays = "replayed", letter.replays + 1
            return outcome, ctx

    def _received(self, key: InboxKey) -> bool:
        with self.deps.ledger.reading() as session:
            return inbox.holds(session, self.service, *key)

    def _payload(self, event: Event) -> BaseModel | None:
        model = EVENT_PAYLOADS.get(event.type)
        if model is None:
            return None
        try:
            return model.model_validate(event.data)
        except ValidationError as exc:
            raise Rejected(f"{event.type} data does not match its schema: {explain(exc)}") from None

    def _reopen(self, tx: Session, letter_id: str, source: str, event_id: str) -> DeadLetter:
        letter = dead_letters.get(tx, letter_id)
        if letter is None or letter.consumer != self.service:
            raise Rejected(f"dead letter {letter_id} does not exist for {self.service}")
        inbox.release(tx, self.service, source, event_id)
        return letter

    def _failed(self, delivery: _Delivery, error: Exception) -> Outcome:
        """Count a transient failure and raise it for the sender to retry, or, once the event has
        failed `max_handling_failures` times in a row, keep it as a dead letter with the error."""
        if isinstance(error, _DATABASE_UNAVAILABLE):  # the database's trouble, not this event's: not counted
            raise error
        limit = self.deps.settings.max_handling_failures
        described = failures.describe(error)
        try:
            with self.deps.ledger.transaction() as tx:
                attempts = failures.record(tx, self.service, *delivery.key, described)
        except Exception:  # noqa: BLE001 - the ledger itself is failing: a plain transient failure
            log.warning("could not count a failed attempt at %s", delivery.event.id, exc_info=True)
            raise error from None
        if attempts < limit:
            log.warning("attempt %d of %d at %s failed: %s", attempts, limit, delivery.event.id, described)
            raise error
        return self._reject(
            delivery,
            f"handling failed {attempts} times in a row (the limit is {limit}); the last error was {described}",
        )

    def _reject(self, routed: _Delivery | _Refusal, reason: str) -> Outcome:
        """Keep the request as a dead letter with the reason (a replay's letter gets the new reason)."""
        event, replay_of, (source, event_id) = routed.event, routed.replay_of, routed.key
        event_type = None if event.type == UNPARSED_TYPE else event.type
        with self.deps.ledger.transaction() as tx:
            failures.clear(tx, self.service, source, event_id)
            if replay_of and (letter := dead_letters.get(tx, replay_of)) is not None:
                letter.reason, letter.replays = reason, letter.replays + 1
                letter_id = letter.id
            elif not inbox.claim(tx, self.service, source, event_id, event_type or "unknown", "rejected"):
                return _duplicate(source, event_id)
            else:
                letter_id = dead_letters.add(
                    tx,
                    consumer=self.service,
                    source=event.source,
                    event_id=event.id,
                    event_type=event_type,
                    reason=reason,
                    request=stored_request(routed.headers, routed.body),
                ).id
        log.warning(
            "dead-lettered %s from %s: %s", event.id, event.source, reason, extra=logs.fields(dead_letter_id=letter_id)
        )
        return Outcome("rejected", reason, dead_letter_id=letter_id)
