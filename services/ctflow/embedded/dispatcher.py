"""Pushes embedded-bus deliveries to their services exactly as Pub/Sub push (or Eventarc) would.

2xx acknowledges. Anything else is retried with exponential backoff; after the last
attempt the delivery is dead-lettered for its service, with the request kept whole so
it can be replayed through the status API.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..codec import push_envelope
from ..ledger import Ledger, dead_letters
from ..ledger.tables import BusDelivery, BusMessage, utcnow
from ..settings import Settings
from ..topology import SUBSCRIPTIONS, Subscription

log = logging.getLogger(__name__)
_BY_NAME = {s.name: s for s in SUBSCRIPTIONS}


def push_request(sub: Subscription, message: BusMessage) -> tuple[dict[str, str], bytes]:
    if sub.delivery == "cloudevent":  # the Pub/Sub binding's attributes are binary-mode headers
        return {k: str(v) for k, v in message.attributes.items()}, message.data
    body = push_envelope(
        message.data,
        message.attributes,
        message.message_id,
        message.published_at.isoformat().replace("+00:00", "Z"),
        f"projects/ctflow-embedded/subscriptions/{sub.name}",
    )
    return {"content-type": "application/json"}, body


def _why(response: httpx.Response) -> str:
    """What a refusing service said about it (a ctflow service answers {"detail": ...} or {"error": ...})."""
    try:
        body = response.json()
    except ValueError:
        body = None
    said = (body.get("detail") or body.get("error")) if isinstance(body, dict) else response.text
    return f": {str(said)[:300]}" if said else ""


class Dispatcher:
    def __init__(
        self, ledger: Ledger, settings: Settings, urls: dict[str, str], wake: threading.Event, *, workers: int = 8
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.urls = urls
        self.wake = wake  # set by LedgerBus.publish in this process; polling covers other writers
        self._client = httpx.Client(timeout=settings.bus_push_timeout_seconds)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="bus-push")

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                busy = self.dispatch_due()
            except Exception:  # noqa: BLE001 - the loop must survive a bad moment of the database
                log.exception("dispatch failed; retrying")
                busy = 0
            if not busy:
                self.wake.wait(timeout=0.1)
                self.wake.clear()
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def dispatch_due(self, limit: int = 64) -> int:
        with self.ledger.transaction() as tx:
            rows = tx.execute(
                select(BusDelivery, BusMessage)
                .join(BusMessage, BusMessage.id == BusDelivery.message_pk)
                .where(BusDelivery.status == "pending", BusDelivery.next_attempt_at <= utcnow())
                .order_by(BusDelivery.id)
                .limit(limit)
            ).all()
        results = list(self._pool.map(lambda row: self._push(*row), rows))
        with self.ledger.transaction() as tx:
            for (delivery, message), error in zip(rows, results, strict=True):
                self._settle(tx, tx.get_one(BusDelivery, delivery.id), message, error)
        return len(rows)

    def _push(self, delivery: BusDelivery, message: BusMessage) -> str | None:
        sub = _BY_NAME.get(delivery.subscription)
        url = self.urls.get(sub.service) if sub else None
        if sub is None or url is None:
            return f"no push endpoint for subscription {delivery.subscription!r}"
        headers, body = push_request(sub, message)
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{sub.service} unreachable: {exc!r}"
        return None if response.is_success else f"{sub.service} answered HTTP {response.status_code}{_why(response)}"

    def _settle(self, tx: Session, delivery: BusDelivery, message: BusMessage, error: str | None) -> None:
        delivery.attempts += 1
        if error is None:
            delivery.status = "acked"
            return
        delivery.last_error = error
        if delivery.attempts < self.settings.bus_max_attempts:
            backoff = min(
                self.settings.bus_backoff_seconds * 2 ** (delivery.attempts - 1), self.settings.bus_backoff_max_seconds
            )
            delivery.next_attempt_at = utcnow() + timedelta(seconds=backoff)
            return
        delivery.status = "dead"
        sub = _BY_NAME.get(delivery.subscription)
        headers, body = push_request(sub, message) if sub else ({}, message.data)
        attrs = message.attributes
        dead_letters.add(
            tx,
            consumer=sub.service if sub else delivery.subscription,
            source=attrs.get("ce-source", f"pubsub:{message.topic}"),
            event_id=attrs.get("ce-id", message.message_id),
            event_type=attrs.get("ce-type"),
            request=dead_letters.stored_request(headers, body),
            reason=f"delivery to {delivery.subscription} failed {delivery.attempts} times; last error: {error}",
        )
        log.error("dead-lettered delivery %s after %s attempts: %s", delivery.id, delivery.attempts, error)
