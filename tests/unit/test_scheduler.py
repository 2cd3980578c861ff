"""The embedded scheduler fires each pipeline schedule at its cron times, as Cloud Scheduler would."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from ctflow.contracts import ScheduleSpec
from ctflow.embedded.scheduler import Scheduler, next_fire
from ctflow.pipelines import PipelineCatalog
from ctflow.settings import REPO_ROOT


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict, dict[str, str]]] = []

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        self.published.append((topic, json.loads(data), dict(attributes)))
        return f"m-{len(self.published)}"


def test_bundled_nightly_schedule_fires_once_at_three_utc_and_not_before(tmp_path):
    (tmp_path / "digits.yaml").write_text((REPO_ROOT / "deploy/pipelines/digits.yaml").read_text())
    now = [datetime(2026, 11, 22, 2, 59, 58, tzinfo=UTC)]
    bus = RecordingBus()
    scheduler = Scheduler(PipelineCatalog(tmp_path), bus, clock=lambda: now[0])  # type: ignore[arg-type]

    assert scheduler.tick() == []  # started at 02:59:58: the first fire is 03:00
    now[0] += timedelta(seconds=1)
    assert scheduler.tick() == []
    now[0] += timedelta(seconds=1)
    assert scheduler.tick() == ["m-1"]
    now[0] += timedelta(seconds=30)
    assert scheduler.tick() == []  # once per cron time
    topic, message, attributes = bus.published[0]
    assert topic == "ctflow-hparams" and attributes == {
        "ctflow-trigger": "schedule",
        "ctflow-schedule": "digits-nightly-retrain",
    }
    assert message == {
        "pipeline": "digits",
        "hyperparameters": {},
        "reason": "nightly retrain on the latest dataset version",
    }


def test_no_backfill_after_downtime_and_time_zones_count():
    schedule = ScheduleSpec(name="morning", cron="30 6 * * *", time_zone="Europe/Amsterdam", message={})
    # 05:30 UTC is 06:30 in Amsterdam in winter: a stack started after it waits for the next day.
    assert next_fire(schedule, datetime(2026, 11, 22, 5, 31, tzinfo=UTC)) == datetime(2026, 11, 23, 5, 30, tzinfo=UTC)
    assert next_fire(schedule, datetime(2026, 7, 1, 0, 0, tzinfo=UTC)) == datetime(2026, 7, 1, 4, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "field, value, match",
    [("cron", "61 * * * *", "cron"), ("cron", "* * * *", "cron"), ("time_zone", "Mars/Olympus", "time zone")],
)
def test_bad_cron_or_time_zone_is_refused_at_spec_load(field, value, match):
    fields = {"name": "nightly", "cron": "0 3 * * *", "message": {}, field: value}
    with pytest.raises(ValidationError, match=match):
        ScheduleSpec(**fields)
