"""Fakes of the Cloud Run Admin API v2 (services, revisions, operations) and of Cloud Monitoring's timeSeries.list.

Neither API has an emulator, so tests drive the real `run_v2.ServicesClient`,
`RevisionsClient` and `monitoring_v3.MetricServiceClient` (REST transport) against these
loopback servers, which record every request and refuse what Cloud Run refuses where that
is cheap to know (design/serving-facts.md):

- a revision name must start with `<service>-`, be lowercase letters, digits and hyphens,
  start with a letter and stay under 64 characters;
- re-sending an existing `template.revision` with a different template is a 409
  ("Revision named ... with different configuration already exists");
- traffic must add up to 100 and name revisions that exist (or the one the same update
  creates); tags are unique;
- a stale etag is refused (409 ABORTED); `update_mask=traffic` changes traffic only;
- a revision is Ready once its startup probe would pass: after `startup_seconds`, or
  never for a revision the test marks as failing.

The Monitoring fake (gRPC: the Monitoring client has no REST transport) holds request
samples a test adds per revision (time, status, latency)
and answers the query shape ctflow sends (ALIGN_DELTA with REDUCE_SUM grouped by
response_code_class; ALIGN_DELTA with REDUCE_PERCENTILE_95), hiding samples newer than
`visibility_delay` seconds, as Cloud Monitoring does.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.fakes.json_api import ApiError, JsonApiHandler
from tests.fakes.vertex_server import RecordedRequest

_SERVICE = r"projects/[^/]+/locations/[^/]+/services/[^/:]+"
_REVISION_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


@dataclass
class FakeRevision:
    name: str  # full resource name
    template: dict[str, Any]
    created: float
    failing: bool = False

    def as_json(self, startup_seconds: float) -> dict[str, Any]:
        ready = not self.failing and time.time() - self.created >= startup_seconds
        state = "CONDITION_SUCCEEDED" if ready else ("CONDITION_FAILED" if self.failing else "CONDITION_PENDING")
        return {
            "name": self.name,
            "service": self.name.split("/revisions/")[0].rsplit("/", 1)[-1],
            "containers": self.template.get("containers", []),
            "reconciling": not ready and not self.failing,
            "conditions": [{"type": "Ready", "state": state}],
        }


class FakeCloudRun:
    def __init__(self, *, startup_seconds: float = 0.0) -> None:
        self.startup_seconds = startup_seconds
        self.services: dict[str, dict[str, Any]] = {}
        self.revisions: dict[str, FakeRevision] = {}
        self.requests: list[RecordedRequest] = []
        self.failing: set[str] = set()  # revision ids whose startup probe never passes
        self._lock = threading.Lock()
        self._ops = itertools.count(1)
        self.endpoint = ""

    # ---- what a test sets up and reads ------------------------------------------------------

    def add_service(self, name: str, template: dict[str, Any]) -> None:
        """A service as Terraform would leave it: one revision `<service>-00001-boot` with all traffic."""
        service_id = name.rsplit("/", 1)[-1]
        first = f"{service_id}-00001-boot"
        self.revisions[f"{name}/revisions/{first}"] = FakeRevision(f"{name}/revisions/{first}", template, 0)
        self.services[name] = {
            "name": name,
            "template": copy.deepcopy(template),
            "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": first, "percent": 100}],
            "generation": "1",
            "observedGeneration": "1",
            "uri": f"https://{service_id}-abc123-uc.a.run.app",
            "etag": '"e1"',
            "latestCreatedRevision": f"{name}/revisions/{first}",
            "latestReadyRevision": f"{name}/revisions/{first}",
        }
        self._observe(self.services[name])

    def updates(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "PATCH"]

    # ---- the API -----------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], raw: bytes) -> dict[str, Any]:
        body = json.loads(raw) if raw else None
        try:
            with self._lock:
                answer = self._dispatch(method, path.removeprefix("/v2/"), query, body)
        except ApiError as exc:
            self.requests.append(RecordedRequest(method, path, query, body, exc.code))
            raise
        self.requests.append(RecordedRequest(method, path, query, body, 200))
        return answer

    def _dispatch(self, method: str, path: str, query: dict[str, str], body: Any) -> dict[str, Any]:
        if re.fullmatch(_SERVICE, path):
            if method == "GET":
                return self._service(path)
            if method == "PATCH":
                return self._operation(self._update(path, body or {}, query.get("updateMask", "")), "Service")
        if re.fullmatch(rf"{_SERVICE}/revisions/[^/]+", path):
            revision = self.revisions.get(path)
            if revision is None:
                raise ApiError(404, f"Revision {path} not found")
            if method == "GET":
                return revision.as_json(self.startup_seconds)
            if method == "DELETE":
                service = self.services[path.split("/revisions/")[0]]
                if any(t.get("revision") == path.rsplit("/", 1)[-1] for t in service["traffic"]):
                    raise ApiError(400, f"Revision {path} is referenced by traffic and cannot be deleted")
                del self.revisions[path]
                return self._operation(revision.as_json(self.startup_seconds), "Revision")
        raise ApiError(404, f"no such resource: {method} {path}")

    def _service(self, name: str) -> dict[str, Any]:
        if name not in self.services:
            raise ApiError(404, f"Service {name} not found")
        return copy.deepcopy(self.services[name])

    def _update(self, name: str, body: dict[str, Any], mask: str) -> dict[str, Any]:
        current = self.services.get(name)
        if current is None:
            raise ApiError(404, f"Service {name} not found")
        if body.get("etag") and body["etag"] != current["etag"]:
            raise ApiError(409, "the service changed since it was read (etag mismatch)", "ABORTED")
        service_id = name.rsplit("/", 1)[-1]
        created: str | None = None
        if mask != "traffic":
            template = body.get("template") or {}
            wanted = template.get("revision", "")
            if wanted:
                full = f"{name}/revisions/{wanted}"
                if not wanted.startswith(f"{service_id}-") or not _REVISION_NAME.fullmatch(wanted):
                    raise ApiError(400, f"revision name {wanted!r} must start with {service_id}- (RFC 1035, <64)")
                existing = self.revisions.get(full)
                if existing is not None and existing.template != template:
                    raise ApiError(
                        409, f"Revision named '{wanted}' with different configuration already exists.", "ALREADY_EXISTS"
                    )
                if existing is None:
                    created = wanted
            elif _without_name(template) != _without_name(current["template"]):
                created = f"{service_id}-{int(current['generation']) + 1:05d}-auto"
            if created:
                full = f"{name}/revisions/{created}"
                self.revisions[full] = FakeRevision(full, copy.deepcopy(template), time.time(), created in self.failing)
                current["latestCreatedRevision"] = full
            current["template"] = copy.deepcopy(template)
        traffic = body.get("traffic", current["traffic"]) if mask in ("traffic", "") else current["traffic"]
        self._check_traffic(name, traffic)
        current["traffic"] = copy.deepcopy(traffic)
        current["generation"] = str(int(current["generation"]) + 1)
        current["observedGeneration"] = current["generation"]
        current["etag"] = f'"e{current["generation"]}"'
        self._observe(current)
        return copy.deepcopy(current)

    def _check_traffic(self, name: str, traffic: list[dict[str, Any]]) -> None:
        if sum(int(t.get("percent", 0)) for t in traffic) != 100:
            raise ApiError(400, f"traffic percents must add up to 100: {traffic}")
        tags = [t["tag"] for t in traffic if t.get("tag")]
        if len(tags) != len(set(tags)):
            raise ApiError(400, f"traffic tags must be unique: {tags}")
        for target in traffic:
            if f"{name}/revisions/{target.get('revision', '')}" not in self.revisions:
                raise ApiError(400, f"Revision '{target.get('revision')}' does not exist")

    def _observe(self, service: dict[str, Any]) -> None:
        base = service["uri"].removeprefix("https://")
        service["trafficStatuses"] = [
            {**t, **({"uri": f"https://{t['tag']}---{base}"} if t.get("tag") else {})} for t in service["traffic"]
        ]

    def _operation(self, resource: dict[str, Any], kind: str) -> dict[str, Any]:
        typed = {"@type": f"type.googleapis.com/google.cloud.run.v2.{kind}", **resource}
        return {"name": f"operations/op-{next(self._ops)}", "done": True, "response": typed, "metadata": typed}


@dataclass(frozen=True)
class Sample:
    at: float
    status: int
    latency_ms: float


class FakeMonitoring:
    def __init__(self, *, visibility_delay: float = 0.0) -> None:
        self.visibility_delay = visibility_delay
        self.samples: dict[str, list[Sample]] = {}  # revision name -> samples
        self.requests: list[RecordedRequest] = []
        self.endpoint = ""

    def add(self, revision: str, status: int, latency_ms: float, count: int = 1, at: float | None = None) -> None:
        self.samples.setdefault(revision, []).extend([Sample(at or time.time(), status, latency_ms)] * count)

    def list_time_series(self, request: Any, context: Any = None) -> Any:
        """MetricService.ListTimeSeries, for the two queries ctflow sends."""
        from google.cloud import monitoring_v3

        self.requests.append(request)
        aligner, reducer = monitoring_v3.Aggregation.Aligner, monitoring_v3.Aggregation.Reducer
        filter_ = request.filter
        revision = re.search(r'resource.labels.revision_name = "([^"]+)"', filter_)
        assert revision is not None and 'resource.type = "cloud_run_revision"' in filter_, filter_
        start, end = request.interval.start_time.timestamp(), request.interval.end_time.timestamp()
        visible = time.time() - self.visibility_delay
        window = [s for s in self.samples.get(revision[1], []) if start <= s.at < end and s.at <= visible]
        agg = request.aggregation
        assert agg.per_series_aligner == aligner.ALIGN_DELTA, agg
        point = {"interval": {"end_time": request.interval.end_time}}
        series = []
        if "run.googleapis.com/request_count" in filter_:
            assert agg.cross_series_reducer == reducer.REDUCE_SUM, agg
            assert list(agg.group_by_fields) == ["metric.labels.response_code_class"], agg
            by_class: dict[str, int] = {}
            for s in window:
                by_class[f"{s.status // 100}xx"] = by_class.get(f"{s.status // 100}xx", 0) + 1
            series = [
                {
                    "metric": {"type": "run.googleapis.com/request_count", "labels": {"response_code_class": k}},
                    "points": [{**point, "value": {"int64_value": n}}],
                }
                for k, n in sorted(by_class.items())
            ]
        elif "run.googleapis.com/request_latencies" in filter_:
            assert agg.cross_series_reducer == reducer.REDUCE_PERCENTILE_95, agg
            excluded = '"4xx"' in filter_
            latencies = sorted(s.latency_ms for s in window if not (excluded and 400 <= s.status < 500))
            if latencies:
                p95 = latencies[min(len(latencies), max(1, math.ceil(0.95 * len(latencies)))) - 1]
                series = [
                    {
                        "metric": {"type": "run.googleapis.com/request_latencies"},
                        "points": [{**point, "value": {"double_value": p95}}],
                    }
                ]
        return monitoring_v3.ListTimeSeriesResponse(time_series=series)


def _without_name(template: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in template.items() if k != "revision"}


def _time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@contextmanager
def fake_google_serving(**options: Any) -> Iterator[tuple[FakeCloudRun, FakeMonitoring]]:
    """Both fakes on loopback ports: Cloud Run's REST (`endpoint` http://...), Monitoring's gRPC (grpc://...;
    its client library has no REST transport)."""
    from concurrent import futures

    import grpc
    from google.cloud import monitoring_v3

    from tests.support import http_server

    run = FakeCloudRun(startup_seconds=options.get("startup_seconds", 0.0))
    monitoring = FakeMonitoring(visibility_delay=options.get("visibility_delay", 0.0))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(
        monitoring.list_time_series,
        request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
        response_serializer=monitoring_v3.ListTimeSeriesResponse.serialize,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("google.monitoring.v3.MetricService", {"ListTimeSeries": handler}),)
    )
    monitoring.endpoint = f"grpc://127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        with http_server(type("RunHandler", (JsonApiHandler,), {"api": run})) as run.endpoint:
            yield run, monitoring
    finally:
        server.stop(grace=None)
