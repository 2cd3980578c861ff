"""A service's warm-up: what it builds at start-up is frozen out of the collector's full passes."""

from __future__ import annotations

import gc

from hparam_consumer import app as module
from tests.integration.conftest import client_for
from tests.support import wait_for


def test_warm_up_freezes_what_start_up_built(deps):
    """Full collections walked ~100k start-up objects and set the p99 under load (docs/performance.md)."""
    gc.unfreeze()
    try:
        with client_for(module, deps) as client:
            wait_for(lambda: client.get("/healthz").json()["ready"])
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
