"""The embedded stack as a user runs it: `ctflow up`, `ctflow drop`, `ctflow publish`, the status API."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.e2e.conftest import ctflow
from tests.support import stop_trainers, wait_for

pytestmark = pytest.mark.e2e


def test_drop_and_sweep_become_runs_visible_in_the_status_api(stack, digits_folder):
    """Drop → a requested run within 2 s with generation, manifest hash and timeline; a 3-point sweep → 3 runs."""
    home, api, _ = stack
    dropped = json.loads(ctflow(home, "drop", str(digits_folder), "--pipeline", "digits", "--version", "e1").stdout)
    started = time.monotonic()
    run = wait_for(
        lambda: next((r for r in httpx.get(f"{api}/runs").json() if r["dataset_version"] == "e1"), None),
        timeout=2.0,
        interval=0.02,
    )
    assert time.monotonic() - started < 2.0
    detail = httpx.get(f"{api}/runs/{run['run_id']}").json()
    assert detail["state"] in ("requested", "training")  # the job-launcher takes it on at once
    assert detail["dataset"]["manifest_sha256"] == dropped["manifest_sha256"] and detail["dataset"]["generation"]
    assert [t["name"] for t in detail["timeline"]][:2] == ["requested", "google.cloud.storage.object.v1.finalized"]

    ctflow(
        home, "publish", "--pipeline", "digits", "--hparams", '{"epochs": 2}', "--sweep", '{"lr": [0.1, 0.01, 0.001]}'
    )

    def sweep_runs():  # type: ignore[no-untyped-def]
        """The sweep's three runs, once the job-launcher has taken each (they are `requested` until then)."""
        runs = [r for r in httpx.get(f"{api}/runs").json() if r["trigger"]["kind"] == "cli"]
        return runs if len(runs) == 3 and all(r["state"] != "requested" for r in runs) else None

    swept = wait_for(sweep_runs, timeout=5)
    # The digits pipeline trains one run at a time: the sweep waits behind the dataset's run (and, on a
    # slow machine, its first point may already have taken the slot when the dataset's run is done).
    assert len(swept) == 3 and all(r["state"] in ("queued", "training") for r in swept)
    assert sum(r["state"] == "queued" for r in swept) >= 2
    listing = ctflow(home, "runs", "--pipeline", "digits").stdout
    assert all(r["run_id"] in listing for r in swept)


def test_dead_letter_is_visible_and_replays_through_the_cli_and_the_status_api(stack, digits_folder):
    """A dataset with a bad checksum is a dead letter; after the file is fixed, replay creates the run."""
    home, api, _ = stack
    version = home / "bucket/datasets/digits/bad1"
    version.mkdir(parents=True)
    good = (digits_folder / "train.npz").read_bytes()
    (version / "train.npz").write_bytes(good[:-4] + b"oops")
    (version / "_MANIFEST.json").write_bytes((digits_folder / "_MANIFEST.json").read_bytes())
    letter = wait_for(lambda: next(iter(httpx.get(f"{api}/dead-letters", params={"status": "open"}).json()), None))
    assert letter["consumer"] == "dataset-listener" and "sha256" in letter["reason"] and "train.npz" in letter["reason"]
    assert httpx.get(f"{api}/dead-letters/{letter['id']}").json()["request"]["headers"]["ce-type"].endswith("finalized")

    listed = json.loads(ctflow(home, "dead-letters", "--status", "open", "--consumer", "dataset-listener").stdout)
    assert [entry["id"] for entry in listed] == [letter["id"]]

    (version / "train.npz").write_bytes(good)
    replayed = json.loads(ctflow(home, "replay", letter["id"]).stdout)
    assert replayed["result"]["status"] == "processed"
    again = subprocess.run(
        [sys.executable, "-m", "ctflow.cli", "replay", letter["id"], "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "already replayed (HTTP 409)" in again.stderr, again.stderr
    assert httpx.post(f"{api}/dead-letters/{letter['id']}/replay").status_code == 409
    assert any(r["dataset_version"] == "bad1" for r in httpx.get(f"{api}/runs").json())
    assert json.loads(ctflow(home, "dead-letters", "--status", "open").stdout) == []


def test_sigterm_stops_cleanly_and_state_survives_restart(stack, digits_folder, tmp_path):
    """SIGTERM exits 0, removes endpoints.json and names the runs whose trainers go on; a new
    `ctflow up` on the same home shows the runs."""
    home, api, proc = stack
    ctflow(home, "drop", str(digits_folder), "--pipeline", "digits", "--version", "s1")
    training = wait_for(lambda: [r["run_id"] for r in httpx.get(f"{api}/runs?state=training").json()])
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert f"Still training: {training[0]}" in stderr.decode()
    assert not (home / "endpoints.json").exists()
    # A person watches this terminal: what it shows are sentences; the services' JSON lines go to the log file.
    assert '"severity"' not in stderr.decode() and "service logs in" in stderr.decode()
    logged = [json.loads(line) for line in (home / "logs" / "ctflow.log").read_text().splitlines()]
    assert any(line["logger"] == "ctflow.intake" and "dataset digits/s1 arrived" in str(line) for line in logged)
    again = subprocess.Popen(
        [sys.executable, "-m", "ctflow.cli", "up", "--home", str(home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (home / "endpoints.json").exists(), timeout=60)
        api2 = json.loads((home / "endpoints.json").read_text())["status_api"].rstrip("/")
        assert [r["dataset_version"] for r in httpx.get(f"{api2}/runs").json()] == ["s1"]
    finally:
        again.send_signal(signal.SIGINT)
        assert again.wait(timeout=30) == 0
        stop_trainers(home)
