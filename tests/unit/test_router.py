"""The embedded router's choice of revision and its per-revision figures."""

from __future__ import annotations

import time
from collections import Counter

from ctflow.serving.router import RevisionStats, Router, percentile


def _router(weights: dict[str, int], ready: set[str]) -> Router:
    router = Router()
    for rev in weights:
        router.add(rev, f"http://127.0.0.1:1/{rev}")
        router.set_ready(rev, rev in ready)
    router.set_weights(weights)
    return router


def test_the_split_is_what_it_says_over_any_run_of_requests():
    router = _router({"canary": 10, "stable": 90}, {"canary", "stable"})
    for run in (10, 20, 50, 1000):
        picks = Counter(router.pick() for _ in range(run))
        assert abs(picks["canary"] - run // 10) <= 1, (run, picks)


def test_a_revision_that_is_not_ready_gets_nothing_and_its_share_goes_to_the_others():
    router = _router({"canary": 50, "stable": 50}, {"stable"})
    assert Counter(router.pick() for _ in range(100)) == {"stable": 100}
    router.set_ready("stable", False)
    assert router.pick() is None  # nothing ready: the router answers 503, no revision is charged


def test_client_errors_are_kept_apart_and_p95_is_over_the_rest():
    stats = RevisionStats()
    for status, latency in [(200, 10.0)] * 18 + [(500, 40.0)] * 2 + [(400, 1.0)] * 5:
        stats.record(status, latency)
    figures = stats.figures(time.time() - 5, time.time() + 1)
    assert (figures.requests, figures.server_errors, figures.client_errors) == (20, 2, 5)
    assert figures.p95_ms == 40.0
    assert stats.figures(0, 1).requests == 0 and stats.figures(0, 1).p95_ms is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0 and percentile([], 0.95) is None
