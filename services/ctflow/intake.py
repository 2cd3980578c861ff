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

import hashlib
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from . import logs
from .coalescing import Coalescer
from .codec import MalformedRequest, decode_request
from .contracts import EVENT_PAYLOADS, explain
from .deps import Dependencies
from .events import Event, trace_id_of
from .handling import Handler, HandlerContext, Handling, InboxKey, Outcome, Rejected, after_commit
from .ledger import dead_letters, failures, inbox
from .ledger.db import data_error_reason
from .ledger.tables import DeadLetter

log = logging.getLogger(__name__)

UNPARSED_SOURCE = "ctflow:unparsed-request"
UNPARSED_TYPE = "ctflow.unparsed-request"  # the stand-in event type of a request that is not an event
INLINE_DECODE_BYTES = 64 * 1024  # larger bodies are decoded in a worker thread, off the event loop


# The database could not do it just now (connection lost, lock or serialization conflict,
# deadlock): the DB-API's errors "not necessarily under the control of the programmer".
_DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)


def _duplicate(source: str, event_id: str) -> Outcome:
    return Outcome("duplicate", f"event {event_id} from {source} was already received")


def _about(event: Event) -> AbstractContextManager[None]:
    """Log lines name the event, its run and its trace."""
    run_id = event.subject if event.type.startswith("ctflow.") else None
    return logs.bind(event_id=event.id, run_id=run_id, trace_id=trace_id_of(event.traceparent))


@dataclass(frozen=True)
class _Delivery:
    """A decoded event and the handler it goes to."""

    event: Event
    handling: Handling
    key: InboxKey  # what the inbox dedupes it on
    replay_of: str | None
    headers: Mapping[str, str]
    body: bytes
    prepared: Any = None

    @property
    def prepares_first(self) -> bool:
        """Whether the handler has slow read-only work to do before its transaction (see `Handling`)."""
        return self.handling.prepare is not None


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
    def __init__(self, service: str, handlers: Mapping[str, Handler | Handling], deps: Dependencies) -> None:
        self.service = service
        self.handlers = {event_type: Handling.of(handler) for event_type, handler in handlers.items()}
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
            declared = dead_letters.declared_size(headers)
            size = f"{declared} bytes" if declared is not None else f"more than {limit} bytes"
            return _Refusal.unparsed(headers, body, f"request body is {size}, over the {limit}-byte limit", replay_of)
        try:
            event = decode_request(headers, body)
        except MalformedRequest as exc:
            return _Refusal.unparsed(headers, body, str(exc), replay_of)
        if unkeepable := inbox.unkeepable_key(event.source, event.id, event.type):
            return _Refusal.unparsed(headers, body, unkeepable, replay_of)
        handling = self.handlers.get(event.type)
        if handling is None:
            handled = ", ".join(sorted(self.handlers)) or "nothing yet"
            reason = f"{self.service} does not handle events of type {event.type!r}; it handles {handled}"
            return _Refusal(event, reason, headers, body, replay_of)
        keyed = handling.inbox_key(event) if handling.inbox_key else None
        key: InboxKey = keyed or (event.source, event.id)
        if key != (event.source, event.id) and (unkeepable := inbox.unkeepable_key(*key, event.type)):
            return _Refusal.unparsed(headers, body, unkeepable, replay_of)
        return _Delivery(event, handling, key, replay_of, headers, body)

    def _prepare(self, routed: _Delivery | _Refusal) -> _Delivery | Outcome:
        """Dead-letter a refusal; run a handler's `prepare` step, outside any transaction."""
        if isinstance(routed, _Refusal):
            return self._reject(routed, routed.reason)
        prepare = routed.handling.prepare
        if prepare is None:
            return routed
        if self._received(routed):
            return _duplicate(*routed.key)
        try:
            return replace(routed, prepared=prepare(self.deps, routed.event))
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
        letters = {place: self._reopen(tx, d) for place, d in enumerate(deliveries) if d.replay_of}
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
            outcome = delivery.handling.handle(ctx) or Outcome("processed")
            outcome.run_ids = outcome.run_ids or ctx.run_ids
            if outcome.status != "processed":
                inbox.set_outcome(tx, self.service, *delivery.key, outcome.status)
            if letter is not None:
                letter.status, letter.replays = "replayed", letter.replays + 1
            return outcome, ctx

    def _received(self, delivery: _Delivery) -> bool:
        """Whether the inbox holds the delivery already and it is not a genuine replay (which runs afresh).

        A replay marker that is not the status API's replay of this event does not skip the check.
        """
        with self.deps.ledger.reading() as session:
            held = inbox.holds(session, self.service, *delivery.key)
            return held and self._replayed_letter(session, delivery) is None

    def _payload(self, event: Event) -> BaseModel | None:
        model = EVENT_PAYLOADS.get(event.type)
        if model is None:
            return None
        try:
            return model.model_validate(event.data)
        except ValidationError as exc:
            raise Rejected(f"{event.type} data does not match its schema: {explain(exc)}") from None

    def _replayed_letter(self, tx: Session, routed: _Delivery | _Refusal) -> DeadLetter | None:
        """The dead letter this delivery genuinely replays (ledger.dead_letters.being_replayed), if any."""
        if not routed.replay_of:
            return None
        letter = dead_letters.being_replayed(
            tx, routed.replay_of, consumer=self.service, source=routed.event.source, event_id=routed.event.id
        )
        if letter is None:
            log.warning("ignored a replay marker for dead letter %s: no such replay is under way", routed.replay_of)
        return letter

    def _reopen(self, tx: Session, delivery: _Delivery) -> DeadLetter | None:
        """Forget a genuinely replayed event's inbox row so it is handled afresh."""
        letter = self._replayed_letter(tx, delivery)
        if letter is not None:
            inbox.release(tx, self.service, *delivery.key)
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
        event, (source, event_id) = routed.event, routed.key
        event_type = None if event.type == UNPARSED_TYPE else event.type
        with self.deps.ledger.transaction() as tx:
            failures.clear(tx, self.service, source, event_id)
            if (letter := self._replayed_letter(tx, routed)) is not None:
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
                    request=dead_letters.stored_request(
                        routed.headers, routed.body, limit=self.deps.settings.max_request_bytes
                    ),
                ).id
        log.warning(
            "dead-lettered %s from %s: %s", event.id, event.source, reason, extra=logs.fields(dead_letter_id=letter_id)
        )
        return Outcome("rejected", reason, dead_letter_id=letter_id)
