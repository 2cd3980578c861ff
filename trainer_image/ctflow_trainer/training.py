"""The training loop: deterministic, in-memory, early-stopped, resumable.

The whole dataset lives on the device as two tensors; each epoch shuffles with a
generator seeded by (seed, epoch) and slices batches directly (no DataLoader, no
worker processes). Adam with weight decay; early stopping on validation loss keeps
the best weights. Dropout draws from torch's global generator, whose state goes into
`state_dict()` with the model, optimizer and progress, so a job resumed from a
checkpoint continues exactly as if it had never stopped. On CUDA the loop uses
autocast + GradScaler; on CPU it runs in float32 and is bit-for-bit repeatable.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (torch convention)

from ctflow_trainer.config import Hyperparameters
from ctflow_trainer.models import build_model

_EVAL_CHUNK = 4096


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    best_epoch: int = 0
    best_val_loss: float = math.inf
    bad_epochs: int = 0
    finished: bool = False
    train_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def best(self) -> dict[str, float]:
        """The metrics of the epoch whose weights are kept; TrainingDiverged if there is none."""
        if not self.best_epoch:
            raise TrainingDiverged(
                f"none of {self.epoch} epoch(s) had a finite validation loss: training diverged (a lower lr may help)"
            )
        return self.history[self.best_epoch - 1]


class TrainingDiverged(ValueError):
    """No epoch had a finite validation loss, so there is no model worth exporting."""


class Trainer:
    """One model, its optimizer and its progress over `hp.epochs` epochs."""

    def __init__(
        self,
        hp: Hyperparameters,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_val: np.ndarray,
        y_val: np.ndarray,
        num_classes: int,
        device: torch.device,
    ) -> None:
        self.hp, self.device = hp, device
        if x_train.ndim != 4:
            raise ValueError(f"training images must be (N, C, H, W); got shape {x_train.shape}")
        channels, height, width = (int(d) for d in x_train.shape[1:])
        self.input_shape = (channels, height, width)
        self.num_classes = num_classes
        torch.manual_seed(hp.seed)  # model initialisation and dropout
        self.model = build_model(
            hp.model,
            input_shape=self.input_shape,
            num_classes=num_classes,
            hidden_units=hp.hidden_units,
            dropout=hp.dropout,
        ).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        # Entering a disabled autocast still costs microseconds per batch; on CPU skip it.
        self._autocast: Callable[[], contextlib.AbstractContextManager] = (
            (lambda: torch.autocast("cuda", dtype=torch.float16)) if self.amp else contextlib.nullcontext
        )
        self.x_train, self.y_train = (
            torch.from_numpy(x_train).to(device),
            torch.from_numpy(y_train).to(device),
        )
        self.x_val, self.y_val = (
            torch.from_numpy(x_val).to(device),
            torch.from_numpy(y_val).to(device),
        )
        self.progress = Progress()
        self.best_state: dict[str, torch.Tensor] | None = None

    def fit(self, on_epoch_end: Callable[[Trainer, dict[str, float]], None] = lambda t, m: None) -> Progress:
        """Train from the current epoch until `epochs` or early stop; call back after each epoch."""
        p = self.progress
        while not p.finished:
            started = time.perf_counter()
            metrics = {"epoch": p.epoch + 1, **self._train_epoch(p.epoch + 1), **self.evaluate()}
            p.epoch += 1
            p.history.append(metrics)
            if metrics["val_loss"] < p.best_val_loss:
                p.best_val_loss, p.best_epoch, p.bad_epochs = metrics["val_loss"], p.epoch, 0
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                p.bad_epochs += 1
            p.finished = p.epoch >= self.hp.epochs or p.bad_epochs >= self.hp.patience
            p.train_seconds += time.perf_counter() - started
            on_epoch_end(self, metrics)
        return p

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        generator = torch.Generator().manual_seed(self.hp.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.y_train), generator=generator).to(self.device)
        xs, ys = self.x_train[order], self.y_train[order]
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        size = self.hp.batch_size
        for start in range(0, len(ys), size):
            xb, yb = xs[start : start + size], ys[start : start + size]
            with self._autocast():
                logits = self.model(xb)
                loss = F.cross_entropy(logits, yb)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                loss.backward()
                self.optimizer.step()
            else:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            loss_sum.add_(loss.detach(), alpha=len(yb))  # tensors, not .item(): no sync per step
            correct.add_((logits.argmax(1) == yb).sum())
        n = len(ys)
        return {"train_loss": loss_sum.item() / n, "train_accuracy": correct.item() / n}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss and accuracy of the current weights."""
        self.model.eval()
        loss_sum, correct = 0.0, 0
        for start in range(0, len(self.y_val), _EVAL_CHUNK):
            xb, yb = (
                self.x_val[start : start + _EVAL_CHUNK],
                self.y_val[start : start + _EVAL_CHUNK],
            )
            with self._autocast():
                logits = self.model(xb)
            loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum").item()
            correct += int((logits.argmax(1) == yb).sum())
        n = len(self.y_val)
        return {"val_loss": loss_sum / n, "val_accuracy": correct / n}

    def best_model(self) -> torch.nn.Module:
        """The best epoch's weights on the CPU in eval mode (what gets exported)."""
        model = build_model(
            self.hp.model,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            hidden_units=self.hp.hidden_units,
            dropout=self.hp.dropout,
        )
        model.load_state_dict(self.best_state if self.best_state is not None else self.model.state_dict())
        return model.eval()

    def state_dict(self) -> dict:
        """Everything needed to continue bit-for-bit: weights, optimizer, RNG and progress."""
        p = self.progress
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "best_state": self.best_state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "progress": {**p.__dict__, "history": list(p.history)},
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.best_state = state["best_state"]
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.progress = Progress(**state["progress"])
