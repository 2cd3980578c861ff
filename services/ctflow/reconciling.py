"""Reconcile steps: the work a service does on a clock, each step at its own pace.

A tick (Cloud Scheduler's POST /reconcile every minute in gcp; the embedded stack's
timer every CTFLOW_RECONCILE_INTERVAL_SECONDS) runs every step that is due. A step
without an interval is due on every tick (re-publishing the outbox, polling jobs).
A step with one (analysing a canary every 30 s) is due when its interval has passed
since it last ran anywhere: the step claims the ledger lease `reconcile:<name>` for
that long (ctflow.ledger.leases) and never gives it back, so its expiry is the step's
next due time, for every process and Cloud Run instance sharing the ledger. A step
cannot run more often than the ticks come.

One step failing does not keep the others from running; the tick reports which failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .deps import Dependencies
    from .settings import Settings

log = logging.getLogger(__name__)
StepReport = dict[str, Any]


@dataclass(frozen=True)
class ReconcileStep:
    name: str
    run: Callable[[Dependencies], StepReport]
    # Seconds between runs, from the settings; None: every tick.
    interval: Callable[[Settings], float] | None = None


def step(
    run: Callable[[Dependencies], StepReport], *, every: Callable[[Settings], float] | None = None
) -> ReconcileStep:
    """A reconcile step named after its function."""
    return ReconcileStep(run.__name__, run, every)


def run_due(deps: Dependencies, steps: Sequence[ReconcileStep], *, now: datetime | None = None) -> StepReport:
    """Run the steps that are due, in order; their reports merged, with `not_due` and `failed` step names."""
    report: StepReport = {}
    not_due: list[str] = []
    failed: list[str] = []
    for each in steps:
        if each.interval is not None and not _claim_turn(deps, each, each.interval(deps.settings), now):
            not_due.append(each.name)
            continue
        try:
            report.update(each.run(deps))
        except Exception:  # noqa: BLE001 - the next tick tries again; the other steps still run
            log.exception("reconcile step %s failed", each.name)
            failed.append(each.name)
    if not_due:
        report["not_due"] = not_due
    if failed:
        report["failed"] = failed
    return report


def _claim_turn(deps: Dependencies, each: ReconcileStep, seconds: float, now: datetime | None) -> bool:
    from .ledger import leases  # not at import: services start without the ledger's modules

    with deps.ledger.transaction() as tx:
        turn = leases.claim(tx, f"reconcile:{each.name}", duration=timedelta(seconds=seconds), now=now)
    return turn is not None


def shortest_interval(steps: Sequence[ReconcileStep], settings: Settings) -> float | None:
    """The shortest interval any step asks for (None: every step runs on every tick)."""
    intervals = [each.interval(settings) for each in steps if each.interval is not None]
    return min(intervals) if intervals else None
