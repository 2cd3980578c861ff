"""`ctflow demo`: the whole loop on the bundled digits dataset, in embedded mode.

Starts the stack, drops the sample dataset, follows the run it creates through the
status API (trained, evaluated, registered, rolled out), and exits 0 once the model
serves: a prediction of a holdout sample answered at the pipeline's stable URL.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from .dataset_drop import drop_folder
from .embedded.stack import EmbeddedStack
from .settings import Settings

if TYPE_CHECKING:
    from .contracts import PipelineSpec
    from .deps import Dependencies

# The state at which the loop is complete: the model serves.
GOAL_STATES = ("promoted",)
FAILED_STATES = ("failed", "rejected", "rolled_back", "superseded")


def _say(text: str) -> None:
    print(f"ctflow demo: {text}", flush=True)


def run_demo(settings: Settings, *, timeout: float = 300) -> int:
    from .sample_data import write_digits_dataset

    with EmbeddedStack(settings) as stack:
        api = stack.urls["status-api"].rstrip("/")
        _say(f"stack up; state in {settings.home}; status API at {api}; service logs in {stack.log_file}")
        deps = stack.dependencies
        spec = deps.pipelines.get("digits")
        assert spec is not None, "the bundled digits pipeline is missing"
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_digits_dataset(Path(tmp) / "digits")
            dropped = drop_folder(folder, spec, deps.blobs)
        _say(f"dropped dataset version {dropped['version']} at {dropped['uri']}")
        run = _follow(api, dropped["version"], timeout)
        served = _predict(stack.serving_urls["digits"], deps, spec) if run and run["state"] in GOAL_STATES else None
    if run is None:
        _say(f"no run reached {'/'.join(GOAL_STATES)} within {timeout:.0f}s")
        return 1
    _say(f"run {run['run_id']} is {run['state']}" + (f" ({run['reason']})" if run.get("reason") else ""))
    if run["state"] in FAILED_STATES:
        return 1
    challenger = (run.get("evaluation") or {}).get("challenger") or {}
    accuracy = f", holdout accuracy {challenger['accuracy']:.4f}" if "accuracy" in challenger else ""
    _say(
        f"model {run['pipeline']} version {run['model_version']} serves as champion{accuracy}; "
        f"rollout {run.get('rollout_id')}; MLflow: {settings.tracking_uri}"
    )
    if served is None:
        _say("the model did not answer a prediction")
        return 1
    _say(f"a holdout sample of label {served[0]} was predicted {served[1]!r} by version {served[2]}")
    _say(f"done. Inspect with: ctflow up --home {settings.home}  then  ctflow run {run['run_id']}")
    return 0


def _predict(url: str, deps: Dependencies, spec: PipelineSpec) -> tuple[int, str, str] | None:
    """One holdout sample sent to the stable serving URL: (its label, the prediction, the version answering)."""
    from completion_handler.evaluation import load_holdout

    holdout = load_holdout(spec.holdout, deps.blobs)
    body = {"instances": [holdout.x[0].tolist()]}
    answer = httpx.post(f"{url.rstrip('/')}/v1/models/{spec.name}:predict", json=body, timeout=30)
    if answer.status_code != 200:
        return None
    return int(holdout.y[0]), answer.json()["predictions"][0]["label"], answer.json()["model_version"]


def _follow(api: str, version: str, timeout: float) -> dict | None:
    deadline, last = time.monotonic() + timeout, None
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            runs = [
                r
                for r in client.get(f"{api}/runs", params={"pipeline": "digits"}).json()
                if r["dataset_version"] == version
            ]
            if runs:
                run = client.get(f"{api}/runs/{runs[0]['run_id']}").json()
                if run["state"] != last:
                    _say(f"run {run['run_id']}: {run['state']}")
                    last = run["state"]
                if run["state"] in GOAL_STATES + FAILED_STATES:
                    return run
            time.sleep(0.2)
    return None


if __name__ == "__main__":
    sys.exit(run_demo(Settings()))
