"""The status API answers bad lookups with a 4xx and the reason, on SQLite and PostgreSQL, never a 500."""

from __future__ import annotations

import pytest

from status_api import app as module
from tests.integration.conftest import client_for


@pytest.mark.parametrize("path", ["/runs/a%00b", "/runs?pipeline=%00", "/dead-letters/%00", "/runs/" + "x" * 5000])
def test_lookups_the_ledger_cannot_make_are_client_errors(deps, path):
    """PostgreSQL cannot compare text holding a NUL character: 400 with the reason (SQLite can: 404 or [])."""
    with client_for(module, deps) as client:
        response = client.get(path)
    assert response.status_code in (200, 400, 404), response.text
    if deps.ledger.dialect == "postgresql" and "%00" in path:
        assert response.status_code == 400 and "NUL" in response.json()["detail"]


def test_replaying_a_letter_named_with_a_nul_is_a_client_error(deps):
    with client_for(module, deps) as client:
        response = client.post("/dead-letters/%00/replay")
    assert response.status_code in (400, 404), response.text
