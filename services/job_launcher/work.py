"""Ledger work the job-launcher does outside an inbound delivery: recording a launch, a reconcile tick.

It gets the same HandlerContext a handler gets, so events go out through `ctx.emit`
(schema check, outbox row and run timeline in the same transaction) and are published
right after commit; whatever that publish misses, the outbox relay sends on the next tick.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from ctflow.deps import Dependencies
from ctflow.events import SOURCE_ROOT, Event
from ctflow.intake import HandlerContext
from ctflow.topology import JOB_LAUNCHER

log = logging.getLogger(__name__)
WORK = "ctflow.job_launcher.work"  # names the cause of context-less work; never published


@contextmanager
def launcher_work(deps: Dependencies, what: str) -> Iterator[HandlerContext]:
    cause = Event(type=WORK, source=f"{SOURCE_ROOT}/{JOB_LAUNCHER}", id=f"{what}-{uuid.uuid4()}")
    with deps.ledger.transaction() as tx:
        ctx = HandlerContext(tx, deps, JOB_LAUNCHER, cause, None)
        yield ctx
    try:
        deps.relay.publish(ctx.outbox_ids)
    except Exception:  # noqa: BLE001 - the relay's reconcile step publishes what this could not
        log.exception("publishing after %s failed; reconcile will retry", what)
