"""Service apps wired to a real ledger (SQLite and PostgreSQL) for intake tests."""

from __future__ import annotations

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
