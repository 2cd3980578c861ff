"""Only the composition root looks at the mode, and only the ledger package at the database's dialect."""

from __future__ import annotations

import ast

from ctflow.settings import REPO_ROOT

SERVICES = REPO_ROOT / "services"


def _attribute_reads(attribute: str) -> dict[str, int]:
    """Files (relative to services/) that read `<something>.<attribute>`, with how often."""
    found: dict[str, int] = {}
    for path in SERVICES.rglob("*.py"):
        tree = ast.parse(path.read_text())
        count = sum(1 for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == attribute)
        if count:
            found[str(path.relative_to(SERVICES))] = count
    return found


def test_only_bootstrap_and_the_settings_validator_read_the_mode():
    """`if mode == ...` lives in bootstrap.py; settings.py only refuses unsafe combinations per mode."""
    assert set(_attribute_reads("mode")) == {"ctflow/bootstrap.py", "ctflow/settings.py"}
    assert _attribute_reads("mode")["ctflow/settings.py"] == 1  # the validator's one switch


def test_only_the_ledger_package_asks_which_database_it_is():
    """PostgreSQL-or-SQLite choices (locks, inserts) stay behind the ledger's functions."""
    readers = set(_attribute_reads("dialect"))
    assert readers and all(path.startswith("ctflow/ledger/") for path in readers), readers


def test_run_queries_live_in_the_ledger_package():
    """Services ask ledger.runs for runs; no `select(Run ...)` of their own."""
    outside = [
        str(path.relative_to(SERVICES))
        for path in SERVICES.rglob("*.py")
        if "select(Run" in path.read_text() and not str(path.relative_to(SERVICES)).startswith("ctflow/ledger/")
    ]
    assert outside == []
