"""Cloud Run serving: each revision a Cloud Run revision of the pipeline's serving service (run_v2).

Built on how Cloud Run behaves (docs/serving.md, and the design's serving-facts.md):

- A canary is a new revision created from the service's own template (its image is the
  one generic model-server image) with a deterministic name (`<service>-v<version>-<sha8>`,
  ctflow.serving.revision_name), the archive named by env (read from the bucket through
  the template's read-only Cloud Storage volume, verified by sha256 at start), a startup
  probe on the model's readiness (`GET /predictions/<pipeline>`, which answers only once
  the model has loaded), and 0% of traffic under the tag `canary`, whose URL reaches it
  alone. Creating it again finds it (by name) and changes nothing.
- Traffic changes send the whole traffic list with `update_mask=traffic`, so the
  template (and its `revision` name, which re-sent with any change is a 409) is never
  part of them; the service's etag goes with every update, the operation is waited for,
  and the change counts as done only when `observed_generation` has caught up and
  `traffic_statuses` show the split asked for.
- Figures come from Cloud Monitoring (ctflow.serving.monitoring), whose data arrives up
  to three minutes late: `metrics_delay_seconds` tells the deployer how far behind "now"
  a window must end before it is judged.

One writer per service: the deployer's rollout lease (ctflow.ledger.leases) fences it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from . import CANARY_TAG, Revision, RevisionFigures, ServingError

if TYPE_CHECKING:
    from google.cloud import run_v2

    from ..settings import Settings

log = logging.getLogger(__name__)
ARCHIVE_MOUNT = "/models"  # where the serving service's template mounts the bucket (read-only)
OPERATION_TIMEOUT_SECONDS = 600


class CloudRunServing:
    metrics_delay_seconds: float

    def __init__(self, settings: Settings, *, figures: Any = None) -> None:
        from google.cloud import run_v2

        from .monitoring import MonitoringFigures

        if not settings.gcp_project:
            raise ValueError("Cloud Run serving needs CTFLOW_GCP_PROJECT")
        self.settings = settings
        self.parent = f"projects/{settings.gcp_project}/locations/{settings.gcp_region}"
        self.services = _client(run_v2.ServicesClient, settings.cloud_run_api_endpoint)
        self.revisions = _client(run_v2.RevisionsClient, settings.cloud_run_api_endpoint)
        self._figures = figures or MonitoringFigures(settings)
        self.metrics_delay_seconds = settings.serving_metrics_delay_seconds

    # ---- the port ----------------------------------------------------------------------------

    def open(self, services: list[str]) -> dict[str, str]:
        return {name: url for name in services if (url := self.url(name))}

    def close(self) -> None:
        """Nothing runs here: Cloud Run runs the revisions."""

    def url(self, service: str) -> str | None:
        return self._service(service).uri or None

    def prediction_url(self, service: str, pipeline: str, revision: str | None = None) -> str:
        found = self._service(service)
        base = found.uri
        if revision is not None:
            tagged = [s.uri for s in found.traffic_statuses if s.revision == revision and s.tag and s.uri]
            if not tagged:
                raise ServingError(f"revision {revision} of {service} has no tag URL")
            base = tagged[0]
        return f"{base.rstrip('/')}/v1/models/{pipeline}:predict"

    def create_revision(self, service: str, revision: Revision) -> None:
        from google.api_core.exceptions import NotFound
        from google.cloud import run_v2

        try:
            self.revisions.get_revision(name=self._revision_path(service, revision.name))
            return  # it exists: a revision is immutable, and its name says what it serves
        except NotFound:
            pass
        current = self._service(service)
        template = current.template
        template.revision = revision.name
        container = template.containers[0]
        env = {e.name: e for e in container.env}
        for name, value in {
            "CTFLOW_ARCHIVE": f"{ARCHIVE_MOUNT}/{revision.archive_uri}",
            "CTFLOW_ARCHIVE_SHA256": revision.archive_sha256,
            "CTFLOW_MODEL_NAME": revision.pipeline,
        }.items():
            env[name] = run_v2.EnvVar(name=name, value=value)
        del container.env[:]
        container.env.extend(env.values())
        container.startup_probe = run_v2.Probe(
            http_get=run_v2.HTTPGetAction(path=f"/predictions/{revision.pipeline}"),
            initial_delay_seconds=0,
            period_seconds=2,
            timeout_seconds=2,
            failure_threshold=90,  # 3 minutes to load a model before the revision counts as failed
        )
        # The tag moves to the new canary: an earlier canary keeps its traffic (untagged) if it has any.
        traffic = [
            _target(t.revision, t.percent, "" if t.tag == CANARY_TAG else t.tag, t.type_)
            for t in current.traffic
            if t.tag != CANARY_TAG or t.percent
        ]
        traffic.append(_target(revision.name, 0, CANARY_TAG))
        current.traffic = traffic
        self._update(current, mask=None)

    def ready(self, service: str, revision: str) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            found = self.revisions.get_revision(name=self._revision_path(service, revision))
        except NotFound:
            return False
        return not found.reconciling and any(
            c.type_ == "Ready" and c.state.name == "CONDITION_SUCCEEDED" for c in found.conditions
        )

    def set_traffic(self, service: str, weights: dict[str, int]) -> None:
        if weights and sum(weights.values()) != 100:
            raise ServingError(f"a traffic split must give 100% in all, not {weights}")
        current = self._service(service)
        canary = next((t.revision for t in current.traffic if t.tag == CANARY_TAG), None)
        targets = [_target(rev, pct, CANARY_TAG if rev == canary else "") for rev, pct in weights.items()]
        if canary is not None and canary not in weights:
            targets.append(_target(canary, 0, CANARY_TAG))  # keeps its tag URL (synthetic traffic, smoke)
        current.traffic = targets
        updated = self._update(current, mask="traffic")
        observed = {s.revision: s.percent for s in updated.traffic_statuses if s.percent}
        if observed != {rev: pct for rev, pct in weights.items() if pct}:
            raise ServingError(f"{service} serves {observed} after asking for {weights}")

    def traffic(self, service: str) -> dict[str, int]:
        return {s.revision: s.percent for s in self._service(service).traffic_statuses if s.percent}

    def figures(self, service: str, revision: str, since: float, until: float) -> RevisionFigures:
        figures: RevisionFigures = self._figures.figures(service, revision, since, until)
        return figures

    def stop_revision(self, service: str, revision: str) -> None:
        """Untag it (no traffic and no tag: it costs nothing) and delete it."""
        from google.api_core.exceptions import NotFound

        current = self._service(service)
        if any(s.revision == revision and s.percent for s in current.traffic_statuses):
            raise ServingError(f"revision {revision} still has traffic; move it away first")
        if any(t.revision == revision for t in current.traffic):
            current.traffic = [
                _target(t.revision, t.percent, t.tag, t.type_) for t in current.traffic if t.revision != revision
            ]
            self._update(current, mask="traffic")
        with contextlib.suppress(NotFound):  # deleted already (a retried stop)
            self.revisions.delete_revision(name=self._revision_path(service, revision)).result(
                timeout=OPERATION_TIMEOUT_SECONDS
            )

    # ---- internals -------------------------------------------------------------------------

    def _service_path(self, service: str) -> str:
        return f"{self.parent}/services/{service}"

    def _revision_path(self, service: str, revision: str) -> str:
        return f"{self._service_path(service)}/revisions/{revision}"

    def _service(self, service: str) -> run_v2.Service:
        return self.services.get_service(name=self._service_path(service))

    def _update(self, service: run_v2.Service, *, mask: str | None) -> run_v2.Service:
        """Send the change with the etag read, wait for it, and check the service caught up with it."""
        request: dict[str, Any] = {"service": service}
        if mask is not None:
            service.template.revision = ""  # a traffic-only change never names a revision (a 409 if it differs)
            request["update_mask"] = {"paths": [mask]}
        done = self.services.update_service(request=request).result(timeout=OPERATION_TIMEOUT_SECONDS)
        if done.observed_generation < done.generation or done.reconciling:
            done = self._service(done.name.rsplit("/", 1)[-1])
        if done.observed_generation < done.generation:
            raise ServingError(f"{done.name} has not caught up with generation {done.generation}")
        return done


def _target(revision: str, percent: int, tag: str = "", kind: Any = None) -> run_v2.TrafficTarget:
    from google.cloud import run_v2

    by_revision = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    return run_v2.TrafficTarget(type_=kind or by_revision, revision=revision, percent=percent, tag=tag)


def _client(cls: Any, endpoint: str | None) -> Any:
    """The real client; against a loopback fake of the API (tests) when the endpoint is an http:// URL."""
    if endpoint and endpoint.startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        rest = cls.get_transport_class("rest")
        return cls(
            transport=rest(host=endpoint.removeprefix("http://"), credentials=AnonymousCredentials(), url_scheme="http")
        )
    if endpoint:
        return cls(client_options={"api_endpoint": endpoint.removeprefix("https://")})
    return cls()
