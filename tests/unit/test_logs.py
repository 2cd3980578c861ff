"""Service logs: one JSON object per line on stderr, as Cloud Logging reads them, libraries included."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import REPO_ROOT

SCRIPT = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    from ctflow import logs
    from ctflow.ledger import Ledger
    from ctflow.registry.mlflow_registry import MlflowModelRegistry
    from ctflow.settings import Settings

    logs.configure("hparam-consumer", "my-project")
    home = Path(sys.argv[1])
    registry = MlflowModelRegistry(Settings(home=home), artifact_root=home / "mlartifacts")
    registry.ensure_experiment("digits")  # MLflow creates its tables, and says so
    Ledger(f"sqlite:///{home / 'ledger.db'}").migrate()
    logging.getLogger("alembic.runtime.migration").warning("a warning")  # MLflow takes Alembic's logger on import
    with logs.bind(trace_id="0af7651916cd43dd8448eb211c80319c", run_id="digits-1"):
        logging.getLogger("ctflow.test").info("handled %s", "e-1", extra=logs.fields(status="processed"))
""")


def test_every_line_is_json_with_service_trace_and_fields_even_from_mlflow_and_alembic(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # fails on any plain-text line
    by_logger = {line["logger"] for line in lines}
    assert {"mlflow.store.db.utils", "alembic.runtime.migration", "ctflow.test"} <= by_logger
    assert all(line["service"] == "hparam-consumer" and line["severity"] for line in lines)
    [ours] = [line for line in lines if line["logger"] == "ctflow.test"]
    assert ours["message"] == "handled e-1" and ours["status"] == "processed" and ours["run_id"] == "digits-1"
    assert ours["logging.googleapis.com/trace"] == "projects/my-project/traces/0af7651916cd43dd8448eb211c80319c"
