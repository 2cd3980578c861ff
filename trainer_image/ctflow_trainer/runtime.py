"""Process-wide torch settings for one job: device, determinism and CPU threads.

CUDA is used when present (mixed precision there, see training.py); otherwise the
CPU. Deterministic algorithms are switched on so a seed fixes the result (strictly on
CPU; on GPU with `warn_only`, since a few CUDA kernels have no deterministic variant).
Small inputs train fastest on one CPU thread: for 8x8 digits through either model,
coordinating threads costs more than the arithmetic (on 2 cores the CNN ran 5-10x
slower on two threads, worse when another process holds a core). Larger inputs use
every core the process may run on. `CTFLOW_TORCH_THREADS` overrides the choice.
"""

from __future__ import annotations

import math
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


SMALL_INPUT_VALUES = 4096  # values per sample (C*H*W) up to which one thread is fastest


def cpu_threads(input_shape: tuple[int, ...], env: Mapping[str, str]) -> int:
    override = env.get("CTFLOW_TORCH_THREADS", "").strip()
    if override:
        return max(1, int(override))
    return 1 if math.prod(input_shape) <= SMALL_INPUT_VALUES else available_cpus()


def configure_torch(hp: Hyperparameters, env: Mapping[str, str], input_shape: tuple[int, ...]) -> torch.device:
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
        torch.set_num_threads(cpu_threads(input_shape, env))
    return device
