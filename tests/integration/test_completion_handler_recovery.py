"""completion-handler recovery: a process killed mid-way, MLflow down, a version created but never recorded.

Whatever happens between the `evaluating` commit and the verdict, reconcile finishes the
run, and the run still ends with exactly one model version.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from completion_handler import app as service
from completion_handler.finishing import finish_stuck
from completion_handler.lease import LEASE, lease_name
from ctflow import bootstrap
from ctflow.ledger import leases
from ctflow.ledger.tables import utcnow
from tests.integration.conftest import client_for
from tests.integration.test_completion_handler import (  # noqa: F401 - fixtures shared with the flow tests
    STRUCTURED,
    evaluation_runs,
    outbox,
    prepared_deps,
    run_of,
    start_training,
    trained_models,
    versions,
)
from tests.integration.test_crash_recovery import _start
from tests.support import free_port


def _lease_held(deps, run_id: str) -> bool:  # type: ignore[no-untyped-def]
    with deps.ledger.reading() as session:
        state = leases.state(session, lease_name(run_id))
    return state is not None and state.held


@pytest.mark.parametrize("failpoint", ["after-commit", "completion-evaluating"])
def test_process_killed_before_the_verdict_is_finished_by_reconcile(prepared, trained, failpoint):
    """SIGKILL right after the `evaluating` commit, or while holding the evaluation lease: reconcile finishes
    the run (a held lease only once it expired), a redelivery is a duplicate, and there is one version."""
    deps, report = prepared, trained.reports["good"]
    run_id = start_training(deps, trained, "good")
    port = free_port()
    doomed = _start(
        deps.settings,
        port,
        "completion_handler.app:app",
        CTFLOW_FAILPOINTS=failpoint,
        CTFLOW_MLFLOW_TRACKING_URI=deps.settings.tracking_uri,
    )
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"http://127.0.0.1:{port}/", content=report, headers=STRUCTURED, timeout=60)
    assert doomed.wait(timeout=10) == -9  # SIGKILL, not a clean exit
    evaluating = run_of(deps, run_id)
    assert evaluating.state == "evaluating"
    died_holding_lease = failpoint == "completion-evaluating"
    assert _lease_held(deps, run_id) is died_holding_lease

    with client_for(service, deps) as client:
        tick = client.post("/reconcile").json()
        if died_holding_lease:
            assert tick["evaluations_finished"] == 0 and run_of(deps, run_id).state == "evaluating"
            later = utcnow() + LEASE + timedelta(seconds=1)
            assert finish_stuck(deps, now=later) == {"evaluations_finished": 1, "evaluations_failed": 0}
        else:
            assert tick["evaluations_finished"] == 1
        assert client.post("/", content=report, headers=STRUCTURED).json()["status"] == "duplicate"
        assert client.post("/reconcile").json()["evaluations_finished"] == 0
    run = run_of(deps, run_id)
    assert (run.state, run.model_version, run.evaluation["attempts"]) == (
        "registered",
        "1",
        2 if died_holding_lease else 1,
    )
    assert len(versions(deps)) == 1 and len(evaluation_runs(deps)) == 1
    assert len(outbox(deps, "ctflow.model.registered.v1")) == 1


def test_mlflow_outage_leaves_the_run_to_reconcile_not_to_a_dead_letter(prepared, trained, monkeypatch):
    """With MLflow unreachable the delivery is still acknowledged; the run waits in `evaluating` with the error
    noted and its lease free, and the first reconcile tick after MLflow is back registers it."""
    deps = prepared
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    unreachable = deps.settings.model_copy(update={"mlflow_tracking_uri": f"http://127.0.0.1:{free_port()}"})
    outage = bootstrap.build(unreachable)
    run_id = start_training(deps, trained, "good")
    try:
        with client_for(service, outage) as client:
            answer = client.post("/", content=trained.reports["good"], headers=STRUCTURED)
            assert answer.status_code == 200 and answer.json()["status"] == "processed"
            assert client.post("/reconcile").json()["evaluations_failed"] == 1
    finally:
        outage.ledger.dispose()
    run = run_of(deps, run_id)
    assert run.state == "evaluating" and not _lease_held(deps, run_id)
    assert "127.0.0.1" in run.evaluation["last_error"] and run.evaluation["attempts"] == 2

    assert finish_stuck(deps) == {"evaluations_finished": 1, "evaluations_failed": 0}
    assert run_of(deps, run_id).state == "registered" and len(versions(deps)) == 1


def test_version_created_before_a_crash_is_found_not_duplicated(prepared, trained):
    """A crash between creating the version and recording it leaves a version tagged with the run: the next
    evaluation finds it by that tag, brings its lineage tags up to date and records it; no second version."""
    deps = prepared
    run_id = start_training(deps, trained, "good")
    training = deps.registry.training_run(trained.data("good")["mlflow_run_id"])
    orphan = deps.registry.register(
        "digits",
        run_id=run_id,
        source=training.model_files_uri,
        mlflow_run_id=training.run_id,
        tags={"ctflow.evaluation_run_id": "crashed"},
    )
    with client_for(service, deps) as client:
        assert client.post("/", content=trained.reports["good"], headers=STRUCTURED).json()["status"] == "processed"
    run = run_of(deps, run_id)
    [version] = versions(deps)
    assert run.model_version == orphan.version == str(version.version)
    assert version.tags["ctflow.evaluation_run_id"] == run.evaluation["evaluation_run_id"]
    assert version.tags["ctflow.dataset_generation"] == trained.dataset["generation"]
