"""The model as TorchServe serves it: TorchScript, raw weights and a small config.

`model.pt` is a traced TorchScript module (CPU, eval mode, float32) that a TorchServe
handler loads with `torch.jit.load` and feeds (N, C, H, W) float32 in [0, 1];
`state_dict.pt` holds the same weights for rebuilding the eager model from
`model_config.json`, which names the architecture, hyperparameters, input shape and
the class label of each output index.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from ctflow_trainer.config import Hyperparameters

TORCHSCRIPT_FILE = "model.pt"
STATE_DICT_FILE = "state_dict.pt"
CONFIG_FILE = "model_config.json"


def export_model(
    model: torch.nn.Module,
    dest: Path,
    *,
    hp: Hyperparameters,
    input_shape: tuple[int, ...],
    num_classes: int,
    pipeline: str,
    run_id: str,
) -> Any:
    """Write the three files into local folder `dest`; returns the TorchScript module."""
    dest.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    example = torch.zeros((1, *input_shape), dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.9+ marks TorchScript deprecated; it is still what TorchServe loads.
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.trace(model, example)
        scripted.save(str(dest / TORCHSCRIPT_FILE))
    torch.save(model.state_dict(), dest / STATE_DICT_FILE)
    config = {
        "format_version": 1,
        "pipeline": pipeline,
        "run_id": run_id,
        "architecture": hp.model,
        "hyperparameters": hp.as_dict(),
        "input_shape": list(input_shape),
        "input_dtype": "float32",
        "input_range": [0.0, 1.0],
        "num_classes": num_classes,
        "class_labels": [str(i) for i in range(num_classes)],
        "output": "logits",
        "files": {"torchscript": TORCHSCRIPT_FILE, "state_dict": STATE_DICT_FILE},
        "torch_version": torch.__version__,
    }
    (dest / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return scripted


def write_tensorboard(history: list[dict[str, float]], dest_uri: str) -> bool:
    """Write the per-epoch curves as TensorBoard scalars (after training, so it costs the loop
    nothing); False when the tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return False
    import tempfile

    from ctflow_trainer import uris

    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(log_dir=tmp)
        for row in history:
            for key, value in row.items():
                if key != "epoch":
                    writer.add_scalar(key, value, int(row["epoch"]))
        writer.close()
        uris.upload_dir(Path(tmp), dest_uri)
    return True
