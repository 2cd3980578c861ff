"""Service apps wired to a real ledger (SQLite and PostgreSQL) for intake tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ctflow.deps import Dependencies


def client_for(module, deps: Dependencies) -> TestClient:  # type: ignore[no-untyped-def]
    app = module.create_app()
    app.state.deps = deps
    return TestClient(app)


@pytest.fixture
def listener(deps: Dependencies) -> Iterator[TestClient]:
    from dataset_listener import app as module

    with client_for(module, deps) as client:
        yield client


@pytest.fixture
def consumer(deps: Dependencies) -> Iterator[TestClient]:
    from hparam_consumer import app as module

    with client_for(module, deps) as client:
        yield client


@pytest.fixture(scope="session")
def pubsub_host() -> Iterator[str]:
    """One Pub/Sub emulator for the session (tests keep apart by project); PUBSUB_EMULATOR_HOST points at it."""
    from tests.integration.emulators import pubsub_emulator

    with pubsub_emulator("ctflow-test") as host:
        old = os.environ.get("PUBSUB_EMULATOR_HOST")
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        yield host
        if old is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = old
