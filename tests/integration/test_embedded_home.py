"""One embedded stack per home; loopback over IPv6 too."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from ctflow.embedded.stack import EmbeddedStack, HomeInUse
from ctflow.settings import Settings


def _settings(tmp_path, **overrides) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(home=tmp_path / "home", reconcile_interval_seconds=60, **overrides)


def test_a_second_stack_on_a_home_is_refused_and_the_first_keeps_its_endpoints(tmp_path):
    """In-process and through `ctflow up` alike; once the first stops, the home is free again."""
    settings = _settings(tmp_path)
    with EmbeddedStack(settings, services=("status-api",)) as first:
        written = first.endpoints_file.read_text()
        with pytest.raises(HomeInUse, match="already runs on"):
            EmbeddedStack(_settings(tmp_path), services=("status-api",))
        refused = subprocess.run(
            [sys.executable, "-m", "ctflow.cli", "up", "--home", str(settings.home)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0 and "an embedded stack already runs on" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert first.endpoints_file.read_text() == written
        healthz = httpx.get(json.loads(written)["status_api"] + "healthz", timeout=10)
        assert healthz.status_code == 200
    with EmbeddedStack(_settings(tmp_path), services=("status-api",)) as again:
        assert again.endpoints_file.exists()


def test_the_stack_serves_on_the_ipv6_loopback(tmp_path):
    """CTFLOW_HOST=::1 passed validation and then failed to bind an IPv4 socket."""
    with EmbeddedStack(_settings(tmp_path, host="::1"), services=("status-api",)) as stack:
        url = stack.urls["status-api"]
        assert url.startswith("http://[::1]:")
        assert httpx.get(url + "healthz", timeout=10).json()["status"] == "ok"
