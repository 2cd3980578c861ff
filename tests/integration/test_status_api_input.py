"""The status API answers bad lookups with a 4xx and the reason, the same on SQLite and PostgreSQL, never a 500."""

from __future__ import annotations

import pytest

from status_api import app as module
from tests.integration.conftest import client_for


@pytest.mark.parametrize(
    ("method", "path", "status", "said"),
    [
        ("GET", "/runs/a%00b", 422, "NUL character"),
        ("GET", "/runs?pipeline=%00", 422, "NUL character"),
        ("GET", "/dead-letters/%00", 422, "NUL character"),
        ("GET", "/dead-letters?consumer=a%00", 422, "NUL character"),
        ("POST", "/dead-letters/%00/replay", 422, "NUL character"),
        ("GET", "/runs/" + "x" * 5000, 404, "no run"),
        ("GET", "/dead-letters/" + "x" * 5000, 404, "no dead letter"),
    ],
)
def test_lookups_the_ledger_cannot_make_are_the_same_client_error_on_every_database(deps, method, path, status, said):
    """A NUL character is refused before the ledger is asked (PostgreSQL cannot compare such text, SQLite
    would have answered 404), so both databases answer alike; an over-long id is simply not there."""
    with client_for(module, deps) as client:
        response = client.request(method, path)
    assert response.status_code == status, response.text
    assert said in response.text
