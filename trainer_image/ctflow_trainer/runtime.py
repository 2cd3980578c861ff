"""Process-wide torch settings for one job: device, determinism and CPU threads.

CUDA is used when present (mixed precision there, see training.py); otherwise the
CPU. Deterministic algorithms are switched on so a seed fixes the result (strictly on
CPU; on GPU with `warn_only`, since a few CUDA kernels have no deterministic variant).
Small models on the CPU run fastest on one thread: for batches of 64 through a
~10k-parameter MLP the per-op cost of coordinating threads exceeds the arithmetic.
`CTFLOW_TORCH_THREADS` overrides the choice.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping

import numpy as np
import torch

from ctflow_trainer.config import Hyperparameters


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_threads(hp: Hyperparameters, env: Mapping[str, str]) -> int:
    override = env.get("CTFLOW_TORCH_THREADS", "").strip()
    if override:
        return max(1, int(override))
    if hp.model == "mlp" and hp.hidden_units <= 512:
        return 1
    return max(1, available_cpus())


def configure_torch(hp: Hyperparameters, env: Mapping[str, str]) -> torch.device:
    """Seed every generator, pick the device, make kernels deterministic; returns the device."""
    # cuBLAS needs this before CUDA initialises to give repeatable matmuls.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(hp.seed)
    np.random.seed(hp.seed)
    torch.manual_seed(hp.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(hp, env))
    return device
