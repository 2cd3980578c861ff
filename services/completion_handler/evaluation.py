"""Measure a model on the pinned holdout: accuracy, loss, confusion matrix, size, CPU latency.

The holdout is an `.npz` in the bucket (`spec.holdout.uri`) with arrays `X` float32
(N, C, H, W) and `y` int64, stored in the model's input space: the same format as a
dataset version's `train.npz`, which the trainer feeds to the model unchanged.
`model_config.json` (written by the trainer next to the TorchScript `model.pt`)
declares that input space; `model_inputs` is the one place that checks a batch
against it, so challenger and champion are measured on identical tensors.

Both models are measured by `measure` in this process, one after the other, under one
lock, so CPU latency is comparable: p95 of single-sample inference over a fixed
number of samples after a warm-up, with one intra-op thread (how a TorchServe worker
runs a small model, and far less noisy than competing for the cores). Each call is
timed by the CPU time of the measuring thread, not the wall clock: the service's other
threads (requests, the reconcile timer) hold the GIL in turns and would otherwise add
up to a switch interval (5 ms) to a call, enough to fail a good model on its latency guard.

A problem that no retry can fix (holdout missing or not matching its pinned sha256,
model files missing or incompatible, outputs that are not finite numbers) raises
`EvaluationError`; anything else is transient. torch and numpy are imported only when a function here runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctflow.blobstore import split_gs_uri
from ctflow.contracts import HoldoutSpec

if TYPE_CHECKING:
    import numpy as np

    from ctflow.blobstore import BlobStore

HOLDOUT_MAX_BYTES = 256 * 1024**2
TORCHSCRIPT_FILE = "model.pt"
CONFIG_FILE = "model_config.json"
LATENCY_WARMUP = 20
LATENCY_SAMPLES = 200
_MEASURING = threading.Lock()  # one model at a time per process: latencies stay comparable


class EvaluationError(Exception):
    """The run cannot be evaluated, and retrying will not change that; the message says why."""


@dataclass(frozen=True)
class Holdout:
    uri: str
    sha256: str
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class ModelMetrics:
    accuracy: float
    loss: float
    model_size_bytes: int
    cpu_p95_ms: float
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class

    def scalars(self) -> dict[str, float]:
        """The metrics the gate and the events speak of."""
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "model_size_bytes": float(self.model_size_bytes),
            "cpu_p95_ms": self.cpu_p95_ms,
        }


def load_holdout(spec: HoldoutSpec, blobs: BlobStore) -> Holdout:
    """Read the pinned holdout from the bucket, check its pinned sha256, parse its arrays."""
    import numpy as np

    name = _object_name(spec.uri, blobs.bucket)
    try:
        data = blobs.read_bytes(name, max_bytes=HOLDOUT_MAX_BYTES)
    except FileNotFoundError:
        raise EvaluationError(f"holdout {spec.uri} is not in the bucket") from None
    except ValueError as exc:  # over the size limit, or a name outside the bucket's rules
        raise EvaluationError(f"holdout {spec.uri} cannot be read: {exc}") from None
    sha256 = hashlib.sha256(data).hexdigest()
    if spec.sha256 and sha256 != spec.sha256:
        raise EvaluationError(
            f"holdout {spec.uri} has sha256 {sha256}; the pipeline pins {spec.sha256} "
            "(the file changed since it was pinned)"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            x, y = archive["X"], archive["y"]
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise EvaluationError(f"holdout {spec.uri} is not an npz with arrays X and y: {exc}") from None
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(y) == 0 or y.dtype.kind not in "iu" or y.min() < 0:
        raise EvaluationError(
            f"holdout {spec.uri} must hold X (N, ...) and integer labels y (N,), "
            f"got X {x.shape} and y {y.dtype} {y.shape} (labels must be >= 0)"
        )
    return Holdout(uri=spec.uri, sha256=sha256, x=x, y=y.astype(np.int64))


def _object_name(uri: str, bucket: str) -> str:
    if (parts := split_gs_uri(uri)) is None:
        return uri
    holder, name = parts
    if holder != bucket:
        raise EvaluationError(f"holdout {uri} is in bucket {holder!r}; this deployment reads bucket {bucket!r}")
    return name


def model_inputs(x: np.ndarray, config: dict[str, Any]) -> Any:
    """The holdout rows as the tensor the model takes, checked against its model_config.json."""
    import numpy as np
    import torch

    expected = tuple(config.get("input_shape") or ())
    if tuple(x.shape[1:]) != expected:
        raise EvaluationError(f"the model takes inputs of shape {list(expected)}; the holdout has {list(x.shape[1:])}")
    low, high = config.get("input_range") or (-np.inf, np.inf)
    if x.size and (float(x.min()) < low or float(x.max()) > high):
        raise EvaluationError(
            f"holdout values span [{float(x.min())}, {float(x.max())}]; the model takes values in [{low}, {high}]"
        )
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def measure(model_dir: Path, holdout: Holdout) -> ModelMetrics:
    """Evaluate the TorchScript model in `model_dir` (the trainer's `model/` folder) on the holdout."""
    import torch

    model, config = _load(model_dir)
    inputs, labels = model_inputs(holdout.x, config), torch.from_numpy(holdout.y)
    with _MEASURING, torch.inference_mode():
        logits = model(inputs)
        classes = int(config.get("num_classes") or logits.shape[-1])
        if logits.ndim != 2 or logits.shape != (len(labels), classes) or int(labels.max()) >= classes:
            raise EvaluationError(
                f"the model returned {tuple(logits.shape)} for {len(labels)} holdout rows; "
                f"expected ({len(labels)}, {classes}) with labels below {classes}"
            )
        if not bool(torch.isfinite(logits).all()):
            raise EvaluationError(
                "the model's outputs on the holdout include NaN or infinite values (did its training diverge?)"
            )
        predicted = logits.argmax(dim=1)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels).item()
        confusion = torch.bincount(labels * classes + predicted, minlength=classes * classes)
        latency = _cpu_p95_ms(model, inputs)
    return ModelMetrics(
        accuracy=float((predicted == labels).double().mean().item()),
        loss=float(loss),
        model_size_bytes=(model_dir / TORCHSCRIPT_FILE).stat().st_size,
        cpu_p95_ms=latency,
        confusion_matrix=confusion.reshape(classes, classes).tolist(),
    )


def _load(model_dir: Path) -> tuple[Any, dict[str, Any]]:
    import torch

    missing = [f for f in (TORCHSCRIPT_FILE, CONFIG_FILE) if not (model_dir / f).is_file()]
    if missing:
        raise EvaluationError(f"the model folder lacks {', '.join(missing)}")
    config = read_config(model_dir)
    try:
        with warnings.catch_warnings():  # torch marks TorchScript deprecated; TorchServe still loads it
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(model_dir / TORCHSCRIPT_FILE), map_location="cpu")
    except (ValueError, RuntimeError) as exc:
        raise EvaluationError(f"the model in {model_dir.name}/ cannot be loaded: {exc}") from None
    return model.eval(), config


def read_config(model_dir: Path) -> dict[str, Any]:
    """The trainer's model_config.json: input shape and range, classes, resolved hyperparameters."""
    try:
        config = json.loads((model_dir / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"{CONFIG_FILE} cannot be read: {exc}") from None
    if not isinstance(config, dict):
        raise EvaluationError(f"{CONFIG_FILE} is not a JSON object")
    return config


def _cpu_p95_ms(model: Any, inputs: Any) -> float:
    """p95 of single-sample latency over LATENCY_SAMPLES rows (cycling), after LATENCY_WARMUP calls.

    With one intra-op thread the whole forward pass runs on this thread, so its CPU time
    is the call's compute; waiting for the GIL or for a core is not counted.
    """
    import numpy as np
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [inputs[i % len(inputs)].unsqueeze(0) for i in range(LATENCY_WARMUP + LATENCY_SAMPLES)]
        for row in rows[:LATENCY_WARMUP]:
            model(row)
        timings = []
        for row in rows[LATENCY_WARMUP:]:
            start = time.thread_time()
            model(row)
            timings.append(time.thread_time() - start)
    finally:
        torch.set_num_threads(threads)
    return float(np.percentile(timings, 95) * 1000.0)
