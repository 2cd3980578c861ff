"""ctflow core: events, schemas, ledger, bus, settings, pipeline specs, ports and adapters.

Nothing here does I/O at import time; heavy libraries (torch, mlflow, Google clients)
are imported only by the code paths that need them.
"""

__version__ = "0.1.0"
