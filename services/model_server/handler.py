"""The TorchServe handler for any model that follows ctflow's model contract.

The archive holds the trainer's `model.pt` (TorchScript), its `model_config.json` (the
task, the input spec: shape, dtype, range; the output spec: class labels) and
`serving.json` (pipeline and model version, written by the deployer's packaging).

A request is `{"instances": [...]}` (the convention of Vertex AI and KServe v1); each
instance is a nested list of the declared shape (without the batch dimension). The
answer is `{"predictions": [...], "model_version": ...}`: for classification each
prediction has the label and the probability of every class; for regression the value.
Every answer names the model version and the revision (`$K_REVISION` on Cloud Run, or
`$CTFLOW_REVISION`) in the headers `ctflow-model-version` and `ctflow-revision`.

An instance that does not match the spec is a client error: 400 naming the instance and
the problem, before the model runs; a body that is not such JSON is a 400 too. Only the
model failing is a 5xx. A request with no body and no content type (`GET
/predictions/<model>`, the startup probe) answers `{"ready": true, ...}`: TorchServe calls
the handler only once the model has loaded and warmed up. Nothing here assumes a
particular model: shapes, dtypes, ranges and labels come from the config.

This file runs inside TorchServe's Python worker, so it imports only torch and the
standard library (not ctflow). TorchServe calls `handle(None, context)` once at load,
then `handle(batch, context)` per batch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MODEL_VERSION_HEADER = "ctflow-model-version"
REVISION_HEADER = "ctflow-revision"
MAX_INSTANCES = 1024
DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "int32": torch.int32}


class BadRequest(ValueError):
    """The request does not follow the model's input spec (a 400, counted as a client error)."""


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]  # one instance, without the batch dimension
    dtype: str
    low: float | None
    high: float | None

    @classmethod
    def of(cls, config: dict[str, Any]) -> InputSpec:
        spec = config.get("input") or {}
        shape = spec.get("shape", config.get("input_shape"))
        dtype = spec.get("dtype", config.get("input_dtype", "float32"))
        value_range = spec.get("range", config.get("input_range")) or [None, None]
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"model_config.json: input shape must be a list of positive integers, got {shape!r}")
        if dtype not in DTYPES:
            raise ValueError(f"model_config.json: input dtype {dtype!r} is not one of {sorted(DTYPES)}")
        return cls(tuple(shape), dtype, value_range[0], value_range[1])

    def check(self, index: int, instance: Any) -> list[Any]:
        """The instance's values, flat, once each is a number of the declared kind and range; BadRequest if not."""
        flat: list[Any] = []
        self._walk(index, instance, 0, flat)
        return flat

    def _walk(self, index: int, value: Any, depth: int, out: list[Any]) -> None:
        if depth == len(self.shape):
            out.append(self._number(index, value))
            return
        if not isinstance(value, list):
            raise BadRequest(f"instance {index}: expected shape {list(self.shape)}, found a non-list at depth {depth}")
        if len(value) != self.shape[depth]:
            raise BadRequest(
                f"instance {index}: expected shape {list(self.shape)}, "
                f"dimension {depth} has {len(value)} entries instead of {self.shape[depth]}"
            )
        for item in value:
            self._walk(index, item, depth + 1, out)

    def _number(self, index: int, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"instance {index}: {value!r} is not a number (dtype {self.dtype})")
        if self.dtype.startswith("int") and not float(value).is_integer():
            raise BadRequest(f"instance {index}: {value!r} is not an integer (dtype {self.dtype})")
        if not math.isfinite(value):
            raise BadRequest(f"instance {index}: {value!r} is not a finite number")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise BadRequest(f"instance {index}: {value!r} is outside the input range [{self.low}, {self.high}]")
        return value

    def example(self) -> list[Any]:
        """A valid instance (every value at the range's low end): the warm-up and readiness prediction."""
        fill: Any = self.low if self.low is not None else 0
        for size in reversed(self.shape):
            fill = [fill] * size
        return list(fill)


def parse(body: Any, spec: InputSpec) -> torch.Tensor:
    """The request body as a batch tensor; BadRequest naming the problem if it is not one."""
    if isinstance(body, bytes | bytearray):
        try:
            body = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise BadRequest('the body must be a JSON object {"instances": [...]}')
    instances = body["instances"]
    if not instances:
        raise BadRequest("instances is empty")
    if len(instances) > MAX_INSTANCES:
        raise BadRequest(f"{len(instances)} instances, more than the {MAX_INSTANCES} a request may carry")
    rows = [spec.check(i, instance) for i, instance in enumerate(instances)]
    return torch.tensor(rows, dtype=DTYPES[spec.dtype]).reshape(len(rows), *spec.shape)


class Model:
    """The loaded model, its spec and what every answer carries."""

    def __init__(self, model_dir: Path) -> None:
        self.config = json.loads((model_dir / "model_config.json").read_text())
        serving_file = model_dir / "serving.json"
        serving = json.loads(serving_file.read_text()) if serving_file.exists() else {}
        self.version = str(serving.get("model_version", "unknown"))
        self.revision = os.environ.get("K_REVISION") or os.environ.get("CTFLOW_REVISION") or "local"
        self.spec = InputSpec.of(self.config)
        self.task = self.config.get("task", "classification")
        self.labels = [str(label) for label in self.config.get("class_labels", [])]
        if self.task not in ("classification", "regression"):
            raise ValueError(f"model_config.json: task {self.task!r} is not classification or regression")
        if self.task == "classification" and not self.labels:
            raise ValueError("model_config.json: a classification model needs class_labels")
        self.module = torch.jit.load(str(model_dir / "model.pt"), map_location="cpu").eval()
        self.answer(
            {"instances": [self.spec.example()]}
        )  # warm up: the first call compiles; a broken model fails to load

    def answer(self, body: Any) -> dict[str, Any]:
        batch = parse(body, self.spec)  # the whole request is checked before the model runs
        with torch.inference_mode():
            out = self.module(batch)
        return {"predictions": self._predictions(out, batch.shape[0]), "model_version": self.version}

    def _predictions(self, out: torch.Tensor, n: int) -> list[Any]:
        flat = out.reshape(n, -1)
        if self.task == "regression":
            return [float(v) for v in flat[:, 0]]
        if flat.shape[1] != len(self.labels):
            raise RuntimeError(f"the model gave {flat.shape[1]} outputs for {len(self.labels)} class labels")
        answers = []
        for row in torch.softmax(flat.float(), dim=1).tolist():
            best = max(range(len(row)), key=row.__getitem__)
            answers.append({"label": self.labels[best], "probabilities": dict(zip(self.labels, row, strict=True))})
        return answers


_model: Model | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[Any] | None:
    """TorchServe's entry point: load at start (data None), then answer each request of the batch."""
    global _model
    if data is None:
        _model = Model(Path(context.system_properties["model_dir"]))
        return None
    assert _model is not None, "TorchServe calls handle(None, context) before any request"
    answers: list[Any] = []
    for idx, request in enumerate(data):
        context.set_response_header(idx, MODEL_VERSION_HEADER, _model.version)
        context.set_response_header(idx, REVISION_HEADER, _model.revision)
        context.set_response_content_type(idx, "application/json")
        body = request.get("body") if request.get("body") is not None else request.get("data")
        if not body and not context.get_request_header(idx, "content-type"):
            # `GET /predictions/<model>`: readiness. Only a loaded, warmed-up model is ever called, so an
            # answer here means it predicts (TorchServe's /ping is healthy before that).
            answers.append(json.dumps({"ready": True, "model_version": _model.version, "revision": _model.revision}))
            continue
        try:
            answers.append(json.dumps(_model.answer(body)))
        except BadRequest as exc:
            context.set_response_status(400, str(exc)[:500], idx)
            answers.append(json.dumps({"error": str(exc), "model_version": _model.version}))
    return answers
