"""The hparam-consumer as a process whose bus is Pub/Sub (the emulator), as in gcp mode.

The ledger and pipelines come from the usual settings (CTFLOW_*); the bus is
google-cloud-pubsub publishing to project `CTFLOW_TEST_PUBSUB_PROJECT` on the emulator
that PUBSUB_EMULATOR_HOST names. Crash tests run it: with Pub/Sub, unlike the embedded
bus, a window exists between commit and publish.
"""

from __future__ import annotations

import os
from dataclasses import replace

from ctflow import bootstrap
from ctflow.bus.pubsub_bus import PubSubBus
from ctflow.bus.relay import OutboxRelay
from ctflow.deps import Dependencies
from hparam_consumer.app import create_app


def _with_pubsub_bus() -> Dependencies:
    deps = bootstrap.build()
    bus = PubSubBus(os.environ["CTFLOW_TEST_PUBSUB_PROJECT"])
    return replace(deps, bus=bus, relay=OutboxRelay(deps.ledger, bus))


app = create_app(deps_factory=_with_pubsub_bus)
