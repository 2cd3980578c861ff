"""Structured JSON log lines that Cloud Logging understands (severity, trace, labels).

One line per record on stderr. Context such as the run id and trace id is bound per
request with `bind()`, so every line of one run joins the same Cloud Trace trace.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("ctflow_log_context")


@contextmanager
def bind(**fields: str | None) -> Iterator[None]:
    token = _context.set({**_context.get({}), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


class CloudLoggingFormatter(logging.Formatter):
    """`context`: fields every line carries, whatever thread logs it (a trainer process's run and trace)."""

    def __init__(self, project: str | None = None, context: dict[str, str] | None = None) -> None:
        super().__init__()
        self.project = project
        self.context = {k: v for k, v in (context or {}).items() if v}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "severity": record.levelname if record.levelname != "WARN" else "WARNING",
            "message": record.getMessage(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "logger": record.name,
        }
        ctx = {**self.context, **_context.get({})}
        trace_id = ctx.pop("trace_id", None)
        if trace_id:
            entry["logging.googleapis.com/trace"] = (
                f"projects/{self.project}/traces/{trace_id}" if self.project else trace_id
            )
        entry.update(ctx)
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(service: str, project: str | None = None, *, log_file: Path | None = None) -> None:
    """Install the JSON handler on the root logger (idempotent: the first call decides where lines go).

    A service on Cloud Run writes to stderr, which Cloud Logging reads. The embedded stack, whose
    terminal a person watches, passes `log_file`: every service in it then logs there.
    """
    root = logging.getLogger()
    for h in root.handlers:
        if isinstance(h.formatter, CloudLoggingFormatter):
            h.formatter.project = project or h.formatter.project
            return
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CloudLoggingFormatter(project))
    root.handlers = [handler]
    root.setLevel(os.environ.get("CTFLOW_LOG_LEVEL", "INFO"))
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin, every migration
    _context.set({"service": service})


# Loggers `import mlflow` gives plain-text handlers of its own (alembic's and SQLAlchemy's too).
MLFLOW_OWNED_LOGGERS = ("mlflow", "alembic", "sqlalchemy.engine", "huey")


def adopt_library_loggers(*names: str, level: int | None = None) -> None:
    """Send loggers a library gave plain-text handlers of its own (mlflow does, on import)
    through the root's JSON handler, so stderr stays one JSON object per line; `level`
    sets theirs (None keeps it). Used by the services and by the trainer (stdlib only)."""
    for name in names:
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            library.removeHandler(handler)
        if level is not None:
            library.setLevel(level)
        library.propagate = True


def fields(**kv: object) -> dict[str, dict[str, object]]:
    """`log.info("...", extra=fields(run_id=...))` adds structured fields to one line."""
    return {"fields": kv}
