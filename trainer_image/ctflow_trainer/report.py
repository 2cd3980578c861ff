"""The completion report: one `ctflow.training.completed.v1` CloudEvent per job, success or not.

The event id is `training-completed-<run_id>`, so redeliveries and re-reports of the
same run deduplicate downstream. It is always written as `completion.json`
(structured-mode CloudEvent JSON) next to the model, then delivered by
`CTFLOW_REPORT_URI`: `http(s)://` -> POST in CloudEvents HTTP binary mode, retried
with backoff on 5xx, 408, 429 and connection errors for up to ~30 s;
`pubsub://projects/P/topics/T` -> Pub/Sub publish with `ce-*` attributes (the
CloudEvents Pub/Sub binding). A report that cannot be delivered is logged, never
raised: the job's exit code reflects training, and reconcile reads completion.json.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ctflow.events import (
    COMPLETION_FILE,
    TRAINER_SOURCE,
    TRAINING_COMPLETED,
    Event,
    to_http_binary,
    to_pubsub,
    training_completed_id,
)
from ctflow_trainer.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)
EVENT_TYPE = TRAINING_COMPLETED
EVENT_SOURCE = TRAINER_SOURCE
_RETRYABLE_STATUS = {408, 429}


def build_event(data: dict[str, Any], *, traceparent: str | None, now: datetime | None = None) -> Event:
    """The report as a CloudEvent; encoded for files, HTTP and Pub/Sub by ctflow.events, as services' events are."""
    run_id = data["run_id"]
    stamp = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")
    return Event(
        type=EVENT_TYPE,
        source=EVENT_SOURCE,
        id=training_completed_id(run_id),
        data=data,
        subject=run_id,
        time=stamp.replace("+00:00", "Z"),
        extensions={"traceparent": traceparent} if traceparent else {},
    )


def deliver(
    event: Event,
    report_uri: str | None,
    *,
    deadline_seconds: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    publisher: Any = None,
) -> bool:
    """Send the event where `report_uri` says; True when delivered (or nowhere to send)."""
    if not report_uri:
        return True
    try:
        if report_uri.startswith(("http://", "https://")):
            return _post(event, report_uri, deadline_seconds, sleep, clock)
        if report_uri.startswith("pubsub://"):
            return _publish(event, report_uri[len("pubsub://") :], deadline_seconds, publisher)
        log.error(
            "CTFLOW_REPORT_URI %r has an unsupported scheme; the report stays in %s",
            report_uri,
            COMPLETION_FILE,
        )
    except Exception:
        log.exception("delivering the completion report to %s failed", report_uri)
    return False


def _post(
    event: Event,
    url: str,
    deadline_seconds: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> bool:
    import httpx

    give_up_at = clock() + deadline_seconds
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        remaining = give_up_at - clock()
        headers, body = to_http_binary(event)
        try:
            response = httpx.post(
                url,
                content=body,
                headers=headers,
                timeout=max(1.0, min(10.0, remaining)),
            )
            if response.is_success:
                log.info(
                    "completion report delivered",
                    extra={"fields": {"url": url, "attempt": attempt}},
                )
                return True
            if response.status_code < 500 and response.status_code not in _RETRYABLE_STATUS:
                log.error(
                    "completion report refused with HTTP %s: %s",
                    response.status_code,
                    response.text[:500],
                )
                return False
            reason = f"HTTP {response.status_code}"
        except httpx.TransportError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if clock() + delay > give_up_at:
            log.error("giving up on the completion report after %d attempts (%s)", attempt, reason)
            return False
        log.warning("completion report attempt %d failed (%s); retrying in %.1fs", attempt, reason, delay)
        sleep(delay)
        delay = min(delay * 2, 8.0)


def _publish(event: Event, topic: str, deadline_seconds: float, publisher: Any) -> bool:
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "topics" or not all(parts):
        raise ValueError(f"pubsub report URI must be pubsub://projects/P/topics/T, got pubsub://{topic}")
    if publisher is None:
        from google.cloud.pubsub_v1 import PublisherClient  # only jobs that report to Pub/Sub pay for this import

        publisher = PublisherClient()
    data, attributes = to_pubsub(event)
    future = publisher.publish(topic, data, **attributes)
    message_id = future.result(timeout=deadline_seconds)
    log.info("completion report published", extra={"fields": {"topic": topic, "message_id": message_id}})
    return True
