"""The Cloud Run serving adapter and its Monitoring figures, through the real google-cloud-run and
google-cloud-monitoring clients, against loopback fakes of both APIs that record what they were asked."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctflow.serving import Revision, ServingError, revision_name
from ctflow.serving.cloudrun import CloudRunServing
from ctflow.settings import Settings
from tests.fakes.cloudrun_server import FakeCloudRun, FakeMonitoring, fake_google_serving

pytestmark = pytest.mark.integration

SERVICE = "projects/proj/locations/us-central1/services/digits-model"
TEMPLATE = {
    "serviceAccount": "digits-model@proj.iam.gserviceaccount.com",
    "containers": [
        {
            "image": "us-docker.pkg.dev/proj/ctflow/model-server@sha256:" + "a" * 64,
            "env": [{"name": "CTFLOW_SERVE_HOST", "value": "0.0.0.0"}],
            "resources": {"limits": {"cpu": "2", "memory": "4Gi"}},
            "volumeMounts": [{"name": "models", "mountPath": "/models"}],
        }
    ],
    "volumes": [{"name": "models", "gcs": {"bucket": "ctflow-artifacts", "readOnly": True}}],
}
SHA = "5ce1cab2" + "0" * 56
CANARY = Revision(
    name=revision_name("digits-model", "2", SHA),
    pipeline="digits",
    version="2",
    archive_uri=f"serving/digits/v2/{SHA}.mar",
    archive_sha256=SHA,
    probe={"instances": [[[[0.0] * 8] * 8]]},
)
STABLE = "digits-model-00001-boot"


def gcp_settings(home: Path, run: FakeCloudRun, monitoring: FakeMonitoring, **changes: object) -> Settings:
    return Settings(
        mode="gcp",
        home=home,
        gcp_project="proj",
        bucket="ctflow-artifacts",
        database_url="sqlite://",
        oidc_audience="https://deployer",
        allowed_invokers=["scheduler@proj.iam.gserviceaccount.com"],
        cloud_run_api_endpoint=run.endpoint,
        monitoring_api_endpoint=monitoring.endpoint,
        **changes,
    )


@pytest.fixture
def google(tmp_path: Path) -> Iterator[tuple[CloudRunServing, FakeCloudRun, FakeMonitoring]]:
    with fake_google_serving() as (run, monitoring):
        run.add_service(SERVICE, TEMPLATE)
        yield CloudRunServing(gcp_settings(tmp_path, run, monitoring, serving_metrics_delay_seconds=0)), run, monitoring


def test_a_canary_is_a_named_revision_of_the_template_with_zero_traffic_a_tag_and_a_readiness_probe(google):
    serving, run, _ = google
    serving.create_revision("digits-model", CANARY)
    (update,) = run.updates()
    assert "updateMask" not in update.query  # a template change: the one kind of update that names a revision
    template = update.body["template"]
    assert template["revision"] == CANARY.name and CANARY.name.startswith("digits-model-v2-") and len(CANARY.name) < 64
    container = template["containers"][0]
    assert container["image"] == TEMPLATE["containers"][0]["image"]  # the one generic model-server image
    assert container["resources"] == TEMPLATE["containers"][0]["resources"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "CTFLOW_SERVE_HOST": "0.0.0.0",
        "CTFLOW_ARCHIVE": f"/models/serving/digits/v2/{SHA}.mar",
        "CTFLOW_ARCHIVE_SHA256": SHA,
        "CTFLOW_MODEL_NAME": "digits",
    }
    assert container["startupProbe"]["httpGet"]["path"] == "/predictions/digits"  # the model answers, not /ping
    by_revision = 2  # TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION, as the client sends it
    assert update.body["traffic"] == [
        {"type": by_revision, "revision": STABLE, "percent": 100},
        {"type": by_revision, "revision": CANARY.name, "tag": "canary"},
    ]
    assert update.body["etag"] == '"e1"'  # the etag read goes with the change
    serving.create_revision("digits-model", CANARY)  # again (a retried tick): found by name, nothing sent
    assert len(run.updates()) == 1
    assert serving.ready("digits-model", CANARY.name)
    assert serving.traffic("digits-model") == {STABLE: 100}
    assert serving.prediction_url("digits-model", "digits", CANARY.name) == (
        "https://canary---digits-model-abc123-uc.a.run.app/v1/models/digits:predict"
    )
    assert serving.prediction_url("digits-model", "digits") == (
        "https://digits-model-abc123-uc.a.run.app/v1/models/digits:predict"
    )


def test_traffic_steps_promotion_and_rollback_send_traffic_only_with_the_etag(google):
    serving, run, _ = google
    serving.create_revision("digits-model", CANARY)
    for canary_percent in (10, 50):
        serving.set_traffic("digits-model", {CANARY.name: canary_percent, STABLE: 100 - canary_percent})
        assert serving.traffic("digits-model") == {CANARY.name: canary_percent, STABLE: 100 - canary_percent}
    serving.set_traffic("digits-model", {STABLE: 100})  # roll back: all to stable, the canary keeps its tag
    serving.stop_revision("digits-model", CANARY.name)
    updates = run.updates()[1:]
    assert [u.query.get("updateMask") for u in updates] == ["traffic"] * 4
    assert all(not u.body["template"].get("revision") for u in updates)  # never names a revision again
    assert [u.body["etag"] for u in updates] == ['"e2"', '"e3"', '"e4"', '"e5"']
    traffic = [{t["revision"]: (t.get("percent", 0), t.get("tag", "")) for t in u.body["traffic"]} for u in updates]
    assert traffic == [
        {CANARY.name: (10, "canary"), STABLE: (90, "")},
        {CANARY.name: (50, "canary"), STABLE: (50, "")},
        {STABLE: (100, ""), CANARY.name: (0, "canary")},
        {STABLE: (100, "")},
    ]
    assert [r.method for r in run.requests if r.path.endswith(CANARY.name)][-1] == "DELETE"
    assert f"{SERVICE}/revisions/{CANARY.name}" not in run.revisions


def test_promotion_and_supersede_and_what_cloud_run_refuses(google):
    serving, run, _ = google
    serving.create_revision("digits-model", CANARY)
    serving.set_traffic("digits-model", {CANARY.name: 100})  # promotion
    assert serving.traffic("digits-model") == {CANARY.name: 100}
    serving.stop_revision("digits-model", STABLE)  # the old stable, retired
    with pytest.raises(ServingError, match="still has traffic"):
        serving.stop_revision("digits-model", CANARY.name)
    # A newer version's canary replaces the tag; the superseded one loses it when stopped.
    newer = Revision(**{**CANARY.to_json(), "name": revision_name("digits-model", "3", "b" * 64), "version": "3"})
    serving.create_revision("digits-model", newer)
    assert {s["revision"]: s.get("tag") for s in run.services[SERVICE]["trafficStatuses"]} == {
        CANARY.name: None,
        newer.name: "canary",
    }
    # What the fake holds Cloud Run to (the adapter never sends these): a named revision re-sent changed
    # is a 409, a split that is not 100% or names no revision is a 400.
    from google.api_core.exceptions import BadRequest, Conflict
    from google.cloud import run_v2

    changed = serving.services.get_service(name=SERVICE)
    changed.template.revision = newer.name
    changed.template.containers[0].image = "other@sha256:" + "c" * 64
    with pytest.raises(Conflict, match="different configuration"):
        serving.services.update_service(service=changed).result()
    with pytest.raises(ServingError):
        serving.set_traffic("digits-model", {newer.name: 50})
    broken = serving.services.get_service(name=SERVICE)
    broken.traffic = [run_v2.TrafficTarget(revision="digits-model-v9-00000000", percent=100)]
    with pytest.raises(BadRequest, match="does not exist"):
        serving.services.update_service(request={"service": broken, "update_mask": {"paths": ["traffic"]}}).result()


def test_a_revision_whose_model_never_loads_is_not_ready(google):
    serving, run, _ = google
    run.failing.add(CANARY.name)
    serving.create_revision("digits-model", CANARY)
    assert not serving.ready("digits-model", CANARY.name)
    assert not serving.ready("digits-model", "digits-model-v7-00000000")  # no such revision


def test_figures_come_from_monitoring_per_revision_with_client_errors_apart(google):
    serving, _, monitoring = google
    now = time.time()
    monitoring.add(CANARY.name, 200, 12.0, count=90, at=now - 20)
    monitoring.add(CANARY.name, 500, 30.0, count=10, at=now - 10)
    monitoring.add(CANARY.name, 404, 1.0, count=7, at=now - 10)
    monitoring.add(STABLE, 200, 11.0, count=300, at=now - 15)
    monitoring.add(CANARY.name, 200, 99.0, count=50, at=now - 100)  # before the window
    figures = serving.figures("digits-model", CANARY.name, now - 30, now)
    assert (figures.requests, figures.server_errors, figures.client_errors) == (100, 10, 7)
    assert figures.p95_ms == 30.0
    stable = serving.figures("digits-model", STABLE, now - 30, now)
    assert (stable.requests, stable.server_errors, stable.p95_ms) == (300, 0, 11.0)
    assert serving.figures("digits-model", "digits-model-v8-00000000", now - 30, now).requests == 0  # no series
    filters = [r.filter for r in monitoring.requests]
    assert all(f'resource.labels.revision_name = "{CANARY.name}"' in f for f in filters[:2])
    assert 'metric.labels.response_code_class != "4xx"' in filters[1]


def test_late_monitoring_data_is_not_yet_counted(tmp_path: Path):
    with fake_google_serving(visibility_delay=60) as (run, monitoring):
        run.add_service(SERVICE, TEMPLATE)
        serving = CloudRunServing(gcp_settings(tmp_path, run, monitoring))
        assert serving.metrics_delay_seconds == 180  # the default allows for Cloud Run's documented delay
        now = time.time()
        monitoring.add(CANARY.name, 200, 10.0, count=40, at=now - 120)
        monitoring.add(CANARY.name, 500, 10.0, count=40, at=now - 5)  # not visible yet
        assert serving.figures("digits-model", CANARY.name, now - 300, now).server_errors == 0
