"""One training job from start to report: the process's entry point.

Reads the environment and runs the job (workflow.py). Whatever happens after the run
id is known, a completion event is built from the outcome, written as
`completion.json` and delivered; the exit code is 0 when training succeeded and 1
otherwise. torch and mlflow are imported only inside the workflow, so even a broken
install still produces a failure report.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ctflow.events import Event, to_structured
from ctflow_trainer import report, uris
from ctflow_trainer.config import ConfigError, JobConfig, parse_overrides
from ctflow_trainer.logs import configure_logging
from ctflow_trainer.outcome import Outcome


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    return run_job(os.environ if env is None else env, sys.argv[1:] if argv is None else argv)


def run_job(env: Mapping[str, str], argv: Sequence[str] = ()) -> int:
    run_id = env.get("CTFLOW_RUN_ID", "").strip() or None
    log = configure_logging(
        run_id, traceparent=env.get("CTFLOW_TRACEPARENT") or None, project=env.get("CTFLOW_GCP_PROJECT") or None
    )
    if run_id is None:
        log.error("CTFLOW_RUN_ID is not set: nothing to train and no run to report on")
        return 1
    outcome = Outcome(
        run_id=run_id,
        pipeline=env.get("CTFLOW_PIPELINE") or None,
        model_dir=env.get("AIP_MODEL_DIR") or None,
        job_id=env.get("CTFLOW_JOB_ID") or env.get("CLOUD_ML_JOB_ID") or None,
    )
    try:
        cfg = JobConfig.from_env(env, parse_overrides(argv))
        from ctflow_trainer.workflow import train

        train(cfg, env, outcome, log)
        outcome.status = "succeeded"
        log.info("training succeeded", extra={"fields": {"metrics": outcome.metrics}})
    except Exception as exc:  # every failure is reported, then the exit code says so
        outcome.status, outcome.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error(
            "training failed: %s",
            outcome.error,
            exc_info=not isinstance(exc, ConfigError | ValueError),
        )
    except SystemExit as exc:  # argparse --help or a usage error
        outcome.status, outcome.error = "failed", f"command line rejected (exit {exc.code})"
    event = report.build_event(outcome.event_data(), traceparent=env.get("CTFLOW_TRACEPARENT") or None)
    _write_completion(event, outcome.model_dir, env.get("AIP_CHECKPOINT_DIR") or None, log)
    report.deliver(event, env.get("CTFLOW_REPORT_URI") or None)
    return 0 if outcome.status == "succeeded" else 1


def _write_completion(event: Event, model_dir: str | None, checkpoint_dir: str | None, log: Any) -> None:
    for folder in (model_dir, checkpoint_dir):
        if not folder:
            continue
        try:
            uris.write_bytes(uris.join(folder, report.COMPLETION_FILE), to_structured(event), "application/json")
            return
        except Exception as exc:
            log.warning("cannot write %s into %s: %s", report.COMPLETION_FILE, folder, exc)
    log.error("completion.json was written nowhere (AIP_MODEL_DIR and AIP_CHECKPOINT_DIR unusable)")
