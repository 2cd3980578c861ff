"""The promotion gate: minimum value, improvement over the champion, guards, and the reasons it gives."""

from __future__ import annotations

import math

from completion_handler.gate import Champion, fmt, judge
from ctflow.contracts import EvaluationSpec, Guard

DIGITS = EvaluationSpec(
    primary_metric="accuracy",
    direction="maximize",
    min_value=0.90,
    min_improvement=0.0,
    guards=[Guard(metric="model_size_bytes", max=20_000_000), Guard(metric="cpu_p95_ms", max=50)],
)
GOOD = {"accuracy": 0.978, "loss": 0.08, "model_size_bytes": 48_215, "cpu_p95_ms": 0.2}


def test_first_model_needs_only_the_minimum():
    """Without a champion a model above the minimum passes; below it fails with value and minimum."""
    assert judge(DIGITS, GOOD, None).passed
    poor = judge(DIGITS, {**GOOD, "accuracy": 0.112}, None)
    assert not poor.passed
    assert poor.reasons == ("accuracy 0.1120 is below the minimum 0.9000",)


def test_challenger_must_improve_on_the_champion_by_the_minimum_improvement():
    """A worse challenger is rejected naming both values; an equal one passes a zero improvement."""
    champion = Champion("1", GOOD)
    worse = judge(DIGITS, {**GOOD, "accuracy": 0.112}, champion)
    assert worse.reasons == (
        "accuracy 0.1120 is below the minimum 0.9000",
        "accuracy 0.1120 does not improve on champion version 1 (0.9780) by at least 0.0000",
    )
    assert judge(DIGITS, GOOD, champion).passed
    stricter = DIGITS.model_copy(update={"min_improvement": 0.01})
    verdict = judge(stricter, {**GOOD, "accuracy": 0.985}, champion)
    assert verdict.reasons == ("accuracy 0.9850 does not improve on champion version 1 (0.9780) by at least 0.0100",)
    assert judge(stricter, {**GOOD, "accuracy": 0.99}, champion).passed


def test_minimized_metric_turns_every_comparison_around():
    """For direction minimize, min_value is the largest acceptable value and improvement means lower."""
    spec = EvaluationSpec(primary_metric="loss", direction="minimize", min_value=0.5, min_improvement=0.05)
    assert judge(spec, {"loss": 0.2}, Champion("3", {"loss": 0.3})).passed
    verdict = judge(spec, {"loss": 0.6}, Champion("3", {"loss": 0.62}))
    assert verdict.reasons == (
        "loss 0.6000 is above the maximum 0.5000",
        "loss 0.6000 does not improve on champion version 3 (0.6200) by at least 0.0500",
    )


def test_guards_bound_size_and_latency_with_their_thresholds():
    """Each broken guard yields its own reason, with the metric's value and its bound."""
    verdict = judge(DIGITS, {**GOOD, "model_size_bytes": 25_000_000, "cpu_p95_ms": 61.25}, None)
    assert verdict.reasons == (
        "model_size_bytes 25000000 is above the maximum 20000000",
        "cpu_p95_ms 61.2500 is above the maximum 50.0000",
    )
    floor = EvaluationSpec(primary_metric="accuracy", guards=[Guard(metric="loss", min=0.01)])
    assert judge(floor, {"accuracy": 1.0, "loss": 0.001}, None).reasons == ("loss 0.0010 is below the minimum 0.0100",)


def test_unmeasured_or_non_finite_metrics_fail_instead_of_slipping_through():
    """NaN compares false with every threshold, so it must fail explicitly; so must a metric never measured."""
    verdict = judge(DIGITS, {**GOOD, "accuracy": math.nan}, Champion("2", GOOD))
    assert verdict.reasons == ("accuracy nan is not a finite number",)
    unknown = EvaluationSpec(primary_metric="f1", guards=[Guard(metric="gpu_ms", max=1)])
    assert judge(unknown, GOOD, None).reasons == (
        "f1 was not measured (measured: accuracy, cpu_p95_ms, loss, model_size_bytes)",
        "gpu_ms was not measured (measured: accuracy, cpu_p95_ms, loss, model_size_bytes)",
    )
    broken_champion = judge(DIGITS, GOOD, Champion("4", {"accuracy": math.inf}))
    assert broken_champion.reasons == ("champion version 4 has no usable accuracy to compare with",)


def test_numbers_read_as_a_person_expects():
    """Fractions with four decimals, byte counts as whole numbers."""
    assert (fmt(0.978), fmt(1.0), fmt(48215.0), fmt(12.5)) == ("0.9780", "1.0000", "48215", "12.5000")
