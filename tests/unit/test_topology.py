"""The topology is the one statement of who takes which event: its handler references resolve, and services
build their intake from it."""

from __future__ import annotations

import pytest

from ctflow import topology
from ctflow.handling import Handling
from ctflow.service import handler_table


@pytest.mark.parametrize("subscription", topology.SUBSCRIPTIONS, ids=lambda s: s.name)
def test_every_handler_reference_names_a_handler(subscription):
    """A typo in a reference fails here, not at a service's first request."""
    assert subscription.service in topology.SERVICES
    for event_type, handling in handler_table(subscription.service).items():
        handle = Handling.of(handling).handle
        assert callable(handle), f"{subscription.name}: {event_type} -> {handle!r}"


def test_a_filtered_subscription_delivers_exactly_its_handlers_types():
    """The Pub/Sub ce-type filter is derived from the handlers; an unfiltered one takes the whole topic."""
    launcher = next(s for s in topology.SUBSCRIPTIONS if s.service == topology.JOB_LAUNCHER)
    assert launcher.event_types == frozenset(launcher.handlers)
    assert launcher.wants({"ce-type": next(iter(launcher.handlers))})
    assert not launcher.wants({"ce-type": "ctflow.something.else.v1"})
    hparams = next(s for s in topology.SUBSCRIPTIONS if s.service == topology.HPARAM_CONSUMER)
    assert hparams.event_types is None and hparams.wants({})


def test_a_service_naming_two_handlers_for_one_type_is_refused(monkeypatch):
    """Two subscriptions of one service cannot disagree on what handles an event type."""
    a = topology.Subscription("a-sub", topology.EVENTS_TOPIC, "svc", {"t": "m:one"})
    b = topology.Subscription("b-sub", topology.HPARAMS_TOPIC, "svc", {"t": "m:two"})
    monkeypatch.setattr(topology, "SUBSCRIPTIONS", (a, b))
    with pytest.raises(ValueError, match="two handlers for t"):
        topology.handlers_for("svc")
