"""The trainer's environment contract, built in one place for every backend (JobRequest.env).

What a training job is told: which run and pipeline it trains, the dataset version's
folder, its hyperparameters (JSON in a variable: they never reach a shell), the event
that triggered it and the run's trace, where MLflow is and which experiment to log to,
where to report `training.completed`, and the code and image it runs when known.
The backend adds its own part: `AIP_MODEL_DIR`/`AIP_CHECKPOINT_DIR` and the job id
(`CTFLOW_JOB_ID` for local processes; Vertex sets `CLOUD_ML_JOB_ID` itself).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import subprocess
from typing import TYPE_CHECKING, Any

from ..events import traceparent_for
from ..ledger.records import Lineage
from ..settings import REPO_ROOT

if TYPE_CHECKING:
    from ..settings import Settings


def trainer_environment(
    settings: Settings,
    *,
    report_uri: str | None,
    run_id: str,
    pipeline: str,
    dataset_uri: str,
    hyperparameters: dict[str, Any],
    trigger_event_id: str | None,
    image: str,
) -> dict[str, str]:
    env = {
        "CTFLOW_RUN_ID": run_id,
        "CTFLOW_PIPELINE": pipeline,
        "CTFLOW_DATASET_URI": dataset_uri,
        "CTFLOW_HYPERPARAMETERS": json.dumps(hyperparameters, sort_keys=True),
        "CTFLOW_TRIGGER_EVENT_ID": trigger_event_id or "",
        "CTFLOW_TRACEPARENT": traceparent_for(run_id),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": pipeline,
    }
    code = lineage(settings, image)
    optional = {
        "CTFLOW_REPORT_URI": report_uri,
        "CTFLOW_GCP_PROJECT": settings.gcp_project,  # the trainer's log lines name their trace in this project
        "CTFLOW_GIT_SHA": code.get("git_sha"),
        "CTFLOW_IMAGE_DIGEST": code.get("image_digest"),
        "CTFLOW_CODE_VERSION": code.get("code_version"),
    }
    return {**env, **{k: v for k, v in optional.items() if v}}


def lineage(settings: Settings, image: str) -> Lineage:
    """Which code a job of `image` runs: this package's version, the checkout's commit (embedded)
    and, on Google Cloud, the trainer image skaffold built, with its digest when pinned by one."""
    found: Lineage = {}
    if version := code_version():
        found["code_version"] = version
    if sha := git_sha():
        found["git_sha"] = sha
    if reference := settings.images.get(image):
        found["trainer_image"] = reference
        if digest := image_digest(reference):
            found["image_digest"] = digest
    return found


@functools.cache
def code_version() -> str | None:
    try:
        return importlib.metadata.version("ctflow")
    except importlib.metadata.PackageNotFoundError:
        return None


def image_digest(reference: str) -> str | None:
    """`sha256:...` of an image pinned by digest (`REPO@sha256:...`); None for a tag or nothing."""
    _, at, digest = reference.partition("@")
    return digest if at and digest.startswith("sha256:") else None


@functools.cache
def git_sha() -> str | None:
    """The commit this checkout runs (embedded); None where there is no git work tree (images)."""
    if not (REPO_ROOT / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None
