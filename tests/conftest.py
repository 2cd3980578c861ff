"""Fixtures: embedded settings in a temp home, ledgers on SQLite and PostgreSQL, sample data."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctflow import bootstrap
from ctflow.deps import Dependencies
from ctflow.settings import REPO_ROOT, Settings
from tests.support import missing

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(autouse=True)
def own_tracking_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process trainer runs export MLFLOW_TRACKING_URI (mlflow.set_tracking_uri does), and
    Settings honours it: without this, one test's MLflow store would leak into the next's."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    import psycopg

    try:
        psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        missing("PostgreSQL on 127.0.0.1:5432", str(exc))
    return PG_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"ctflow_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each ledger test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def pipelines_dir(tmp_path: Path) -> Path:
    """A copy of the bundled pipeline specs that a test may edit."""
    folder = tmp_path / "pipelines"
    shutil.copytree(REPO_ROOT / "deploy" / "pipelines", folder)
    return folder


@pytest.fixture
def settings(tmp_path: Path, ledger_url: str, pipelines_dir: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=ledger_url,
        pipelines_dir=pipelines_dir,
        outbox_grace_seconds=0,
        bus_backoff_seconds=0.05,
    )


@pytest.fixture
def deps(settings: Settings) -> Iterator[Dependencies]:
    built = bootstrap.build(settings)
    yield built
    built.ledger.dispose()


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled digits sample as a dataset version folder (files + marker)."""
    from ctflow.sample_data import write_digits_dataset

    return write_digits_dataset(tmp_path_factory.mktemp("sample") / "digits")
