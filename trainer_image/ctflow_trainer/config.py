"""The job's inputs: hyperparameters and the environment-variable contract, parsed and checked.

Hyperparameters come from `CTFLOW_HYPERPARAMETERS` (a JSON object), overridden by
command-line flags (how MLflow Projects passes them); missing keys take the digits
pipeline's defaults. Values are checked against the same bounds as the pipeline
spec's schema, so a bad value fails the run with a clear message before any work.
Everything else the job needs is read from the environment into one `JobConfig`.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


class ConfigError(ValueError):
    """The job's environment or hyperparameters are not acceptable; the message says why."""


@dataclass(frozen=True)
class Hyperparameters:
    model: str = "mlp"
    lr: float = 0.003
    epochs: int = 30
    batch_size: int = 64
    hidden_units: int = 128
    dropout: float = 0.1
    weight_decay: float = 0.0001
    patience: int = 5
    seed: int = 42

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# name -> (type, minimum, maximum, minimum is exclusive); mirrors deploy/pipelines/digits.yaml.
_BOUNDS: dict[str, tuple[type[int] | type[float], float, float, bool]] = {
    "lr": (float, 0.0, 1.0, True),
    "epochs": (int, 1, 200, False),
    "batch_size": (int, 8, 1024, False),
    "hidden_units": (int, 8, 2048, False),
    "dropout": (float, 0.0, 0.9, False),
    "weight_decay": (float, 0.0, 0.1, False),
    "patience": (int, 1, 50, False),
    "seed": (int, 0, 2**32 - 1, False),  # numpy and torch seeds are 32-bit
}
MODELS = ("mlp", "cnn")


def _coerce(name: str, value: object) -> str | int | float:
    if name == "model":
        if not isinstance(value, str) or value not in MODELS:
            raise ConfigError(f"hyperparameter model must be one of {list(MODELS)}, got {value!r}")
        return value
    kind, low, high, exclusive = _BOUNDS[name]
    if isinstance(value, str):  # from the command line; MLflow Projects may render 30 as "30.0"
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"hyperparameter {name} must be a {kind.__name__}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"hyperparameter {name} must be a {kind.__name__}, got {value!r}")
    if kind is int and (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"hyperparameter {name} must be an integer, got {value!r}")
    number = kind(value)
    if not math.isfinite(number) or number < low or number > high or (exclusive and number == low):
        bound = f"> {low}" if exclusive else f">= {low}"
        raise ConfigError(f"hyperparameter {name}={number!r} is out of bounds ({bound} and <= {high})")
    return number


def parse_hyperparameters(raw_json: str | None, overrides: Mapping[str, object] | None = None) -> Hyperparameters:
    """Defaults, then the JSON object, then `overrides` (unset overrides are None and ignored)."""
    values: dict[str, object] = {}
    if raw_json and raw_json.strip():
        try:
            doc = json.loads(raw_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"CTFLOW_HYPERPARAMETERS is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ConfigError("CTFLOW_HYPERPARAMETERS must be a JSON object")
        values.update(doc)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = set(Hyperparameters.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown hyperparameters {unknown}; accepted: {sorted(known)}")
    coerced: dict[str, Any] = {k: _coerce(k, v) for k, v in values.items()}
    return Hyperparameters(**coerced)


def parse_overrides(argv: Sequence[str]) -> dict[str, object]:
    """Hyperparameter flags (`--lr 0.01`); anything else on the command line is an error."""
    parser = argparse.ArgumentParser(prog="python -m ctflow_trainer", description=__doc__)
    for name in Hyperparameters.__dataclass_fields__:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar="VALUE")
    args, extra = parser.parse_known_args(list(argv))
    if extra:
        raise ConfigError(f"unexpected command-line arguments {extra}")
    return vars(args)


@dataclass(frozen=True)
class JobConfig:
    run_id: str
    pipeline: str
    dataset_uri: str
    hyperparameters: Hyperparameters
    model_dir: str | None  # required to train (checked when the job starts), not to parse
    checkpoint_dir: str | None
    tensorboard_dir: str | None
    tracking_uri: str | None
    experiment_name: str
    mlflow_run_id: str | None  # set by `mlflow run` (MLflow Projects): use that run
    trigger_event_id: str | None
    traceparent: str | None
    code_version: str | None  # the ctflow release that launched the job
    git_sha: str | None
    image_digest: str | None
    job_id: str | None
    report_uri: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str], overrides: Mapping[str, object] | None = None) -> JobConfig:
        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def required(name: str) -> str:
            value = get(name)
            if value is None:
                raise ConfigError(f"environment variable {name} is required")
            return value

        pipeline = required("CTFLOW_PIPELINE")
        return cls(
            run_id=required("CTFLOW_RUN_ID"),
            pipeline=pipeline,
            dataset_uri=required("CTFLOW_DATASET_URI"),
            hyperparameters=parse_hyperparameters(get("CTFLOW_HYPERPARAMETERS"), overrides),
            model_dir=get("AIP_MODEL_DIR"),
            checkpoint_dir=get("AIP_CHECKPOINT_DIR"),
            tensorboard_dir=get("AIP_TENSORBOARD_LOG_DIR"),
            tracking_uri=get("MLFLOW_TRACKING_URI"),
            experiment_name=get("MLFLOW_EXPERIMENT_NAME") or pipeline,
            mlflow_run_id=get("MLFLOW_RUN_ID"),
            trigger_event_id=get("CTFLOW_TRIGGER_EVENT_ID"),
            traceparent=get("CTFLOW_TRACEPARENT"),
            code_version=get("CTFLOW_CODE_VERSION"),
            git_sha=get("CTFLOW_GIT_SHA"),
            image_digest=get("CTFLOW_IMAGE_DIGEST"),
            job_id=get("CTFLOW_JOB_ID") or get("CLOUD_ML_JOB_ID"),
            report_uri=get("CTFLOW_REPORT_URI"),
        )
