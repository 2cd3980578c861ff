"""Requests the deployer itself sends a canary: the smoke test, and synthetic traffic when live traffic is thin.

Both go to the canary revision only (its tag URL on Cloud Run, its revision path on the
embedded router), built from the pipeline's holdout samples (never from data the model
was trained on) and the revision's probe (one valid instance of its declared input), so
a window is judged on requests the canary really answered.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from ctflow.contracts import PipelineSpec
    from ctflow.deps import Dependencies

log = logging.getLogger(__name__)
SMOKE_SAMPLES = 5
SAMPLES_KEPT = 256
_samples: dict[tuple[str, str], list[Any]] = {}  # (pipeline, holdout sha256) -> instances
_lock = threading.Lock()


@dataclass(frozen=True)
class Smoke:
    passed: bool
    detail: str


def holdout_instances(deps: Dependencies, spec: PipelineSpec) -> list[Any]:
    """Up to SAMPLES_KEPT instances of the pipeline's holdout (read once per process); [] if it cannot be read."""
    key = (spec.name, spec.holdout.sha256 or spec.holdout.uri)
    with _lock:
        if key in _samples:
            return _samples[key]
    from completion_handler.evaluation import EvaluationError, load_holdout

    try:
        holdout = load_holdout(spec.holdout, deps.blobs)
        instances = [row.tolist() for row in holdout.x[:SAMPLES_KEPT]]
    except EvaluationError as exc:
        log.warning("no holdout samples for %s's synthetic traffic: %s", spec.name, exc)
        instances = []
    with _lock:
        _samples[key] = instances
    return instances


def smoke_test(url: str, probe: dict[str, Any], samples: list[Any]) -> Smoke:
    """The probe and a few holdout samples, each answered 200 with one prediction, or the first problem."""
    bodies = [probe] + [{"instances": [s]} for s in samples[:SMOKE_SAMPLES]]
    with httpx.Client(timeout=30) as client:
        for n, body in enumerate(bodies):
            try:
                answer = client.post(url, json=body)
            except httpx.HTTPError as exc:
                return Smoke(False, f"request {n} did not get an answer: {type(exc).__name__}")
            if answer.status_code != 200:
                return Smoke(False, f"request {n} answered {answer.status_code}: {answer.text[:300]}")
            try:
                predictions = answer.json()["predictions"]
            except (ValueError, KeyError, TypeError):
                return Smoke(False, f"request {n} answered 200 without predictions: {answer.text[:300]}")
            if not isinstance(predictions, list) or len(predictions) != len(body["instances"]):
                return Smoke(False, f"request {n} answered {len(predictions)} predictions for 1 instance")
    return Smoke(True, f"{len(bodies)} requests answered with predictions")


def send_synthetic(
    url: str, probe: dict[str, Any], samples: list[Any], count: int, *, budget_seconds: float, concurrency: int = 4
) -> int:
    """Up to `count` single-instance requests to the canary, a few at a time, within the time budget; how many
    were sent (each one is counted by whatever records the canary's answers, whatever it answered)."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = list(itertools.islice(itertools.cycle([{"instances": [s]} for s in samples] or [probe]), max(count, 0)))
    deadline = time.monotonic() + budget_seconds
    sent = 0
    lock = threading.Lock()

    def worker(mine: list[dict[str, Any]]) -> None:
        nonlocal sent
        with httpx.Client(timeout=max(1.0, budget_seconds)) as client:
            for body in mine:
                if time.monotonic() > deadline:
                    return
                # A failure is the router's count of the canary's server error (or it never got there).
                with contextlib.suppress(httpx.HTTPError):
                    client.post(url, json=body)
                with lock:
                    sent += 1

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for n in range(concurrency):
            pool.submit(worker, bodies[n::concurrency])
    return sent
