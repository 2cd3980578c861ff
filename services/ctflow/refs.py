"""References to code by name ("module:attribute"), imported when first used.

Services name their handlers and adapters this way so that start-up imports none of
them: heavy libraries (MLflow, Vertex AI) load with the first request that needs them.
"""

from __future__ import annotations

import importlib
from typing import Any


def load_ref(ref: str) -> Any:
    """The object a "module:attribute" reference names, imported on demand."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
