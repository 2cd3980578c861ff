"""The embedded stand-in for Cloud Scheduler: each pipeline's `schedules` publish their message.

Same contract as the Cloud Scheduler jobs deploy/terraform/events.tf creates: the
schedule's `message` as JSON data on the hyperparameter topic, attribute
`ctflow-trigger: schedule`, fired at the cron times in the schedule's time zone. Like
Cloud Scheduler it does not backfill: times missed while the stack was down are
skipped, and the first fire after a start is the next one from then. Specs are read
on every tick, so an edited schedule takes effect without a restart.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from ..bus import MessageBus
from ..contracts import ScheduleSpec
from ..pipelines import PipelineCatalog
from ..topology import HPARAMS_TOPIC

log = logging.getLogger(__name__)
TRIGGER_ATTRIBUTES = {"ctflow-trigger": "schedule"}


def next_fire(schedule: ScheduleSpec, after: datetime) -> datetime:
    from croniter import croniter

    local = after.astimezone(ZoneInfo(schedule.time_zone))
    return croniter(schedule.cron, local).get_next(datetime).astimezone(UTC)


class Scheduler:
    def __init__(
        self,
        pipelines: PipelineCatalog,
        bus: MessageBus,
        *,
        interval: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pipelines, self.bus, self.interval, self.clock = pipelines, bus, interval, clock
        self._due: dict[tuple[str, str, str, str], datetime] = {}  # (pipeline, name, cron, tz) -> next fire

    def tick(self) -> list[str]:
        """Publish every schedule whose time has come; returns the message ids published."""
        now, published, seen = self.clock(), [], set()
        for pipeline, spec in self.pipelines.all().items():
            for schedule in spec.schedules:
                key = (pipeline, schedule.name, schedule.cron, schedule.time_zone)
                seen.add(key)
                due = self._due.setdefault(key, next_fire(schedule, now))
                if due <= now:
                    published.append(self._fire(pipeline, schedule))
                    self._due[key] = next_fire(schedule, now)
        for gone in set(self._due) - seen:  # removed or edited schedules
            del self._due[gone]
        return published

    def _fire(self, pipeline: str, schedule: ScheduleSpec) -> str:
        attributes = {**TRIGGER_ATTRIBUTES, "ctflow-schedule": f"{pipeline}-{schedule.name}"}
        message_id = self.bus.publish(HPARAMS_TOPIC, json.dumps(schedule.message).encode(), attributes)
        log.info("schedule %s of %s fired: message %s", schedule.name, pipeline, message_id)
        return message_id

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a bad spec or a busy ledger: the next tick tries again
                log.exception("scheduler tick failed")
