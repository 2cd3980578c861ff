"""A pipeline's rollout plan, as the pure decision (deployer.decide) takes it, from its spec's serving section."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ctflow.contracts import ServingSpec

from .decide import Plan


def plan_of(serving: ServingSpec) -> Plan:
    return Plan(
        steps=tuple(serving.canary_steps),
        analysis_interval_seconds=serving.analysis_interval_seconds,
        warmup_seconds=serving.warmup_seconds,
        min_requests=serving.min_requests,
        max_error_rate=serving.max_error_rate,
        max_error_rate_increase=serving.max_error_rate_increase,
        max_p95_latency_ms=serving.max_p95_latency_ms,
        max_p95_latency_ratio=serving.max_p95_latency_ratio,
        failed_windows=serving.failed_windows,
        inconclusive_deadline_seconds=serving.inconclusive_deadline_seconds,
        when_inconclusive=serving.when_inconclusive,
        synthetic_traffic=serving.synthetic_traffic,
    )


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as a rollout keeps it (the rules it began with, whatever the spec says later)."""
    return asdict(plan)


def plan_from_json(doc: dict[str, Any]) -> Plan:
    return Plan(**{**doc, "steps": tuple(doc["steps"])})
