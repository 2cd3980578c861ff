"""The promotion gate: may this challenger become a registered model version?

Pure functions over the pipeline's `evaluation` section and measured metrics, so the
rules are tested without torch or MLflow. The checks, each failing with a reason that
names the metric, its value and the threshold (or the champion's value):

1. the primary metric reaches `min_value` (for `direction: minimize` it must not exceed it);
2. when a champion exists, the primary metric improves on the champion's by at least
   `min_improvement` (an equal value passes a zero improvement); the first model of a
   pipeline has no champion and needs only the minimum;
3. every guard holds (`max`: value <= max, `min`: value >= min), e.g. model size and
   CPU latency.

A metric that was not measured, or is not a finite number, fails its check: NaN compares
false with everything, so it would otherwise slip through.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ctflow.contracts import EvaluationSpec


@dataclass(frozen=True)
class Champion:
    version: str
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]


def judge(spec: EvaluationSpec, challenger: Mapping[str, float], champion: Champion | None) -> Verdict:
    """Apply every check; the challenger passes when no check yields a reason."""
    reasons = [*primary_reasons(spec, challenger, champion), *guard_reasons(spec, challenger)]
    return Verdict(passed=not reasons, reasons=tuple(reasons))


def primary_reasons(spec: EvaluationSpec, challenger: Mapping[str, float], champion: Champion | None) -> list[str]:
    metric, maximize = spec.primary_metric, spec.direction == "maximize"
    problem = _unusable(metric, challenger)
    if problem:
        return [problem]
    value = challenger[metric]
    reasons = []
    if spec.min_value is not None:
        if maximize and value < spec.min_value:
            reasons.append(f"{metric} {fmt(value)} is below the minimum {fmt(spec.min_value)}")
        elif not maximize and value > spec.min_value:
            reasons.append(f"{metric} {fmt(value)} is above the maximum {fmt(spec.min_value)}")
    if champion is not None:
        reasons.extend(_improvement_reasons(spec, value, champion))
    return reasons


def _improvement_reasons(spec: EvaluationSpec, value: float, champion: Champion) -> list[str]:
    metric, needed = spec.primary_metric, spec.min_improvement
    if _unusable(metric, champion.metrics):
        return [f"champion version {champion.version} has no usable {metric} to compare with"]
    theirs = champion.metrics[metric]
    gain = value - theirs if spec.direction == "maximize" else theirs - value
    if gain >= needed:
        return []
    return [
        f"{metric} {fmt(value)} does not improve on champion version {champion.version} "
        f"({fmt(theirs)}) by at least {fmt(needed)}"
    ]


def guard_reasons(spec: EvaluationSpec, challenger: Mapping[str, float]) -> list[str]:
    reasons = []
    for guard in spec.guards:
        problem = _unusable(guard.metric, challenger)
        if problem:
            reasons.append(problem)
            continue
        value = challenger[guard.metric]
        if guard.max is not None and value > guard.max:
            reasons.append(f"{guard.metric} {fmt(value)} is above the maximum {fmt(guard.max)}")
        if guard.min is not None and value < guard.min:
            reasons.append(f"{guard.metric} {fmt(value)} is below the minimum {fmt(guard.min)}")
    return reasons


def _unusable(metric: str, metrics: Mapping[str, float]) -> str | None:
    if metric not in metrics:
        measured = ", ".join(sorted(metrics)) or "nothing"
        return f"{metric} was not measured (measured: {measured})"
    if not math.isfinite(metrics[metric]):
        return f"{metric} {metrics[metric]} is not a finite number"
    return None


def fmt(value: float) -> str:
    """Whole numbers as integers (bytes), everything else with four decimals (0.9780, 12.5000)."""
    if float(value).is_integer() and abs(value) >= 1000:
        return str(int(value))
    return f"{value:.4f}"
