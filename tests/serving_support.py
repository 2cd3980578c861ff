"""Models to serve and the registrations that start their rollouts, for serving tests.

The models are real TorchScript modules in the model contract (model.pt + model_config.json,
digits' 8x8 input): a good one, one that fails a share of its predictions (a 5xx from the
model itself), and a slow one. They are registered in the stack's MLflow and their runs
put in the ledger at `registered`, then `model.registered` is published as the
completion-handler publishes it: from there on everything is the deployer's own.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch

from ctflow import events, states
from ctflow.deps import Dependencies
from ctflow.ledger import runs
from ctflow.topology import COMPLETION_HANDLER, EVENTS_TOPIC

INPUT_SHAPE = (1, 8, 8)


class Good(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(x.shape[0], -1))


class Flaky(Good):
    """Fails about `share` of its predictions (TorchServe answers those 500) once it has answered a few
    (its warm-up and smoke test pass: the failures show only under traffic, as a leak's would)."""

    def __init__(self, share: float, healthy_calls: int = 10) -> None:
        super().__init__()
        self.share = share
        self.healthy_calls = healthy_calls
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if bool(self.calls > self.healthy_calls) and bool(torch.rand(1) < self.share):
            raise RuntimeError("injected model failure")
        return self.linear(x.reshape(x.shape[0], -1))


class Slow(Good):
    """The same answers, after `rounds` of busy work (several times the good model's latency)."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds
        self.work = torch.nn.Parameter(torch.rand(256, 256) / 256, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = self.work
        for _ in range(self.rounds):
            acc = torch.tanh(acc @ self.work)
        return self.linear(x.reshape(x.shape[0], -1)) + acc.sum() * 0


def write_model(folder: Path, kind: str = "good") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model: torch.nn.Module = {"good": lambda: Good(), "flaky": lambda: Flaky(0.3), "slow": lambda: Slow(40)}[kind]()
    torch.jit.script(model.eval()).save(str(folder / "model.pt"))
    config = {
        "format_version": 1,
        "task": "classification",
        "input_shape": list(INPUT_SHAPE),
        "input_dtype": "float32",
        "input_range": [0.0, 1.0],
        "class_labels": [str(i) for i in range(10)],
        "output": "logits",
    }
    (folder / "model_config.json").write_text(json.dumps(config))
    return folder


def register(deps: Dependencies, pipeline: str, model_dir: Path, tag: str) -> tuple[str, str]:
    """A model version of `model_dir` and its run in the ledger at `registered`; (run id, version)."""
    run_id = runs.run_id_for(pipeline, "serving-test", tag)
    mlflow_run = deps.registry.log_run(pipeline, run_name=run_id, tags={}, metrics={}, documents={})
    version = deps.registry.register(
        pipeline, run_id=run_id, source=model_dir.resolve().as_uri(), mlflow_run_id=mlflow_run, tags={}
    ).version
    registered_run(deps, pipeline, run_id, version)
    return run_id, version


def registered_run(deps: Dependencies, pipeline: str, run_id: str, version: str) -> None:
    """A run in the ledger at `registered` with its model version, as the completion-handler leaves it."""
    with deps.ledger.transaction() as tx:
        runs.create(tx, run_id=run_id, pipeline=pipeline, trigger={"kind": "test"}, hyperparameters={}, service="test")
    with deps.ledger.transaction() as tx:
        run = runs.get(tx, run_id, for_update=True)
        assert run is not None
        for state in (states.TRAINING, states.EVALUATING, states.REGISTERED):
            runs.transition(tx, run, state, COMPLETION_HANDLER)
        run.model_version = version


def announce(deps: Dependencies, pipeline: str, run_id: str, version: str, copies: int = 1) -> None:
    """Publish `model.registered` as the completion-handler does (`copies` times: redeliveries)."""
    event = events.run_event(
        events.MODEL_REGISTERED,
        COMPLETION_HANDLER,
        run_id,
        {"run_id": run_id, "pipeline": pipeline, "model_name": pipeline, "model_version": version, "metrics": {}},
        event_id=f"model-registered-{run_id}",
    )
    data, attributes = events.to_pubsub(event)
    for _ in range(copies):
        deps.bus.publish(EVENTS_TOPIC, data, attributes)


def instance(rng: random.Random) -> list[Any]:
    return [[[round(rng.random(), 3) for _ in range(8)] for _ in range(8)]]


@dataclass
class Answers:
    by_version: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    stable_failures: int = 0  # 5xx (or no answer) from a version that was not the canary's
    failures: list[str] = field(default_factory=list)


class Traffic:
    """Live requests to a service's URL from a background thread, at about `rate` per second."""

    def __init__(self, url: str, *, rate: float = 60.0, threads: int = 1, canary_version: str | None = None) -> None:
        self.url, self.rate, self.canary_version = url, rate / threads, canary_version
        self.answers = Answers()
        self.windows: list[tuple[float, str, int]] = []  # (time, version header, status)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self, n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    answer = client.post(self.url, json={"instances": [instance(rng)]})
                    revision, status = answer.headers.get("ctflow-revision", "?"), answer.status_code
                    version = revision.rsplit("-v", 1)[-1].split("-")[0] if "-v" in revision else "?"
                except httpx.HTTPError as exc:
                    revision, version, status = repr(exc), "?", 599
                self.answers.by_version[version] += 1
                self.answers.by_status[status] += 1
                self.windows.append((time.time(), version, status))
                if status >= 500 and version != self.canary_version:
                    self.answers.stable_failures += 1
                    self.answers.failures.append(f"{status} from {revision}: {answer.text[:200]}")
                self._stop.wait(max(0.0, 1 / self.rate - (time.monotonic() - started)))
