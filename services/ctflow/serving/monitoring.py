"""Per-revision figures for canary analysis from Cloud Monitoring (google-cloud-monitoring).

- Requests: `run.googleapis.com/request_count` on `cloud_run_revision`, one revision,
  aligned ALIGN_DELTA over the whole window and summed across series grouped by
  `metric.labels.response_code_class`: 5xx are server errors, 4xx client errors (kept
  apart, never held against a canary), the rest answers.
- Latency: `run.googleapis.com/request_latencies` (a distribution, ms) without 4xx,
  ALIGN_DELTA then REDUCE_PERCENTILE_95 across series, so the percentile is taken of the
  merged distribution (not a median of per-instance percentiles, the pairing Cloud Run
  Release Manager gets wrong).
- No series at all means no requests, not a healthy canary: the analysis then finds the
  window inconclusive (too few requests), never passed.

Data is sampled every 60 s and may be invisible for up to 180 s: the deployer judges a
window only once it ended `serving_metrics_delay_seconds` ago (CloudRunServing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import RevisionFigures

if TYPE_CHECKING:
    from ..settings import Settings

REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"


class MonitoringFigures:
    def __init__(self, settings: Settings) -> None:
        from google.cloud import monitoring_v3

        self.project = f"projects/{settings.gcp_project}"
        endpoint = settings.monitoring_api_endpoint
        if endpoint and endpoint.startswith("grpc://"):  # a loopback fake (tests): plaintext gRPC, no credentials
            import grpc
            from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

            channel = grpc.insecure_channel(endpoint.removeprefix("grpc://"))
            self.client = monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))
        elif endpoint:
            self.client = monitoring_v3.MetricServiceClient(client_options={"api_endpoint": endpoint})
        else:
            self.client = monitoring_v3.MetricServiceClient()

    def figures(self, service: str, revision: str, since: float, until: float) -> RevisionFigures:
        from google.cloud import monitoring_v3

        where = (
            f'resource.type = "cloud_run_revision" AND resource.labels.service_name = "{service}" '
            f'AND resource.labels.revision_name = "{revision}"'
        )
        by_class: dict[str, int] = {}
        for series in self._list(
            f'metric.type = "{REQUEST_COUNT}" AND {where}',
            since,
            until,
            monitoring_v3.Aggregation.Reducer.REDUCE_SUM,
            group_by=["metric.labels.response_code_class"],
        ):
            code_class = series.metric.labels.get("response_code_class", "")
            by_class[code_class] = by_class.get(code_class, 0) + sum(int(p.value.int64_value) for p in series.points)
        p95: float | None = None
        for series in self._list(
            f'metric.type = "{REQUEST_LATENCIES}" AND {where} AND metric.labels.response_code_class != "4xx"',
            since,
            until,
            monitoring_v3.Aggregation.Reducer.REDUCE_PERCENTILE_95,
        ):
            values = [p.value.double_value for p in series.points]
            p95 = max(values) if values else p95
        client_errors = by_class.get("4xx", 0)
        return RevisionFigures(
            requests=sum(by_class.values()) - client_errors,
            server_errors=by_class.get("5xx", 0),
            client_errors=client_errors,
            p95_ms=p95,
        )

    def _list(
        self, filter_: str, since: float, until: float, reducer: Any, group_by: list[str] | None = None
    ) -> list[Any]:
        """The series of one query, each aligned ALIGN_DELTA over the whole window, reduced across series."""
        from google.cloud import monitoring_v3

        aggregation = monitoring_v3.Aggregation(
            alignment_period={"seconds": max(1, round(until - since))},
            per_series_aligner=monitoring_v3.Aggregation.Aligner.ALIGN_DELTA,
            cross_series_reducer=reducer,
            group_by_fields=group_by or [],
        )

        interval = monitoring_v3.TimeInterval(
            start_time={"seconds": int(since), "nanos": int((since % 1) * 1e9)},
            end_time={"seconds": int(until), "nanos": int((until % 1) * 1e9)},
        )
        pages = self.client.list_time_series(
            request={
                "name": self.project,
                "filter": filter_,
                "interval": interval,
                "aggregation": aggregation,
                "view": monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
            }
        )
        return list(pages)
