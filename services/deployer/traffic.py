"""Requests the deployer itself sends a canary: the smoke test, and synthetic traffic when live traffic is thin.

Both go to the canary revision only (its tag URL on Cloud Run, its revision path on the
embedded router), built from the pipeline's holdout samples (never from data the model
was trained on) and the revision's probe (one valid instance of its declared input), so
a window is judged on requests the canary really answered.
"""

from __future__ import annotations

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


def send_synthetic(url: str, probe: dict[str, Any], samples: list[Any], count: int, *, budget_seconds: float) -> int:
    """Up to `count` single-instance requests to the canary, within the time budget; how many were answered."""
    bodies = [{"instances": [s]} for s in samples] or [probe]
    answered, deadline = 0, time.monotonic() + budget_seconds
    with httpx.Client(timeout=10) as client:
        for body in itertools.islice(itertools.cycle(bodies), max(count, 0)):
            if time.monotonic() > deadline:
                break
            try:
                client.post(url, json=body)
                answered += 1
            except httpx.HTTPError:
                answered += 1  # the router counted it as the canary's server error
    return answered
