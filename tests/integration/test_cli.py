"""The CLI refuses bad input with a one-line reason, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(("option", "value", "reason"), [
    ("--hparams", "{bad", "--hparams is not valid JSON"),
    ("--hparams", '{"lr": NaN}', "NaN is not a JSON value"),
    ("--hparams", "[0.01]", "--hparams must be a JSON object"),
    ("--sweep", '{"lr": [0.1,', "--sweep is not valid JSON"),
])
def test_publish_refuses_options_that_are_not_json_objects(tmp_path: Path, option: str, value: str, reason: str):
    args = ["--pipeline", "digits", option, value]
    done = subprocess.run([sys.executable, "-m", "ctflow.cli", "publish", "--home", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and reason in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "ledger.db").exists()  # nothing was published
