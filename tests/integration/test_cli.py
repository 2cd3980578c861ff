"""The CLI refuses bad input with a one-line reason, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port, serving


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("--hparams", "{bad", "--hparams is not valid JSON"),
        ("--hparams", '{"lr": NaN}', "NaN is not a JSON value"),
        ("--hparams", "[0.01]", "--hparams must be a JSON object"),
        ("--sweep", '{"lr": [0.1,', "--sweep is not valid JSON"),
    ],
)
def test_publish_refuses_options_that_are_not_json_objects(tmp_path: Path, option: str, value: str, reason: str):
    args = ["--pipeline", "digits", option, value]
    done = subprocess.run(
        [sys.executable, "-m", "ctflow.cli", "publish", "--home", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and reason in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "ledger.db").exists()  # nothing was published


def _cli(*args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([sys.executable, "-m", "ctflow.cli", *args], capture_output=True, text=True, timeout=60)


def test_status_commands_say_what_the_api_said_or_that_it_did_not_answer(deps):
    """Not found, or nothing listening: a one-line reason and exit 1, never a traceback (the e2e tests
    replay a letter twice: the second is refused as already replayed)."""
    from status_api import app as module

    app = module.create_app()
    app.state.deps = deps
    with serving(app) as url:
        for args, said in (
            (("run", "digits-nope"), "no run 'digits-nope' (HTTP 404)"),
            (("replay", "no-such-letter"), "no dead letter 'no-such-letter' (HTTP 404)"),
        ):
            done = _cli(*args, "--api", url)
            assert done.returncode == 1 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
        listed = _cli("dead-letters", "--status", "open", "--api", url)
        assert listed.returncode == 0 and listed.stdout.strip() == "[]"
    silent = _cli("runs", "--api", f"http://127.0.0.1:{free_port()}")
    assert silent.returncode == 1 and "did not answer" in silent.stderr and "Traceback" not in silent.stderr


def test_a_setting_that_cannot_be_read_is_named(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "ctflow.cli", "runs", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CTFLOW_MAX_SWEEP_POINTS": "many"},
    )
    assert done.returncode == 1 and "CTFLOW_MAX_SWEEP_POINTS: Input should be a valid integer" in done.stderr
    assert "Traceback" not in done.stderr


def test_drop_with_a_broken_pipeline_spec_says_which_and_why(tmp_path: Path, pipelines_dir: Path, digits_folder):
    """A spec that does not load is named with its problem, never a traceback."""
    (pipelines_dir / "broken.yaml").write_text("name: broken\ndataset: [not, a, mapping]\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctflow.cli",
            "drop",
            str(digits_folder),
            "--pipeline",
            "digits",
            "--home",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CTFLOW_PIPELINES_DIR": str(pipelines_dir)},
    )
    assert done.returncode == 1 and "do not load" in done.stderr and "broken.yaml" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
