"""The rollout decision (deployer.decide), driven one tick at a time: the phases a canary goes through, the
figures each decision names, and what every kind of window leads to."""

from __future__ import annotations

from dataclasses import replace

from ctflow.contracts import ServingSpec
from deployer.decide import (
    Figures,
    MoveChampion,
    Observation,
    Plan,
    RetireStable,
    SendSynthetic,
    SetTraffic,
    State,
    StopCanary,
    decide,
    judge,
    start,
)
from deployer.plan import plan_of

PLAN = plan_of(ServingSpec(service="digits-model"))  # the defaults: steps 10/50/100, 30 s windows, 50 requests
GOOD = Figures(requests=200, server_errors=1, p95_ms=20.0)
STABLE = Figures(requests=1800, server_errors=9, p95_ms=18.0)


class Ticks:
    """A rollout driven like the deployer does: observe, decide, keep the state; every decision is kept."""

    def __init__(self, state: State, plan: Plan = PLAN) -> None:
        self.state, self.plan, self.now = state, plan, state.step_started_at
        self.decisions: list = []
        self.actions: list = []

    def tick(self, after: float, **seen) -> list:  # type: ignore[no-untyped-def]
        self.now += after
        self.state, actions, decision = decide(self.state, self.plan, Observation(now=self.now, **seen))
        self.decisions.append(decision)
        self.actions.append(actions)
        return actions

    def ready(self) -> list:
        return self.tick(1, canary_ready=True, smoke_passed=True)

    def window(self, canary: Figures = GOOD, stable: Figures | None = STABLE) -> list:
        """Wait out the warm-up and one analysis interval, then observe the window."""
        return self.tick(PLAN.warmup_seconds + PLAN.analysis_interval_seconds, canary=canary, stable=stable)


def _rollout(stable: str | None = "3") -> Ticks:
    return Ticks(start("4", stable, now=1000.0))


def test_a_good_canary_is_stepped_through_every_weight_then_promoted_with_a_compare_and_swap():
    ticks = _rollout()
    assert ticks.tick(5) == [] and ticks.state.phase == "readying"  # not answering yet
    assert ticks.ready() == [SetTraffic(10)] and ticks.state.phase == "analysing"
    assert ticks.tick(5, canary=GOOD, stable=STABLE) == []  # still in its warm-up: the window is open
    assert ticks.window() == [SetTraffic(50)]
    # Reaching the last step (100%) is the promotion: traffic and the champion move together, and the
    # old stable revision, left without traffic, is retired.
    assert ticks.window() == [SetTraffic(100), MoveChampion(expected="3", to="4"), RetireStable()]
    assert ticks.state.phase == "promoted" and ticks.state.weight == 100
    passed = [d for d in ticks.decisions if d.verdict == "passed"]
    assert [d.weight for d in passed] == [50, 100] and passed[0].figures["canary_requests"] == 200
    assert ticks.tick(60) == [] and ticks.state.phase == "promoted"  # final


def test_the_first_deployment_goes_to_full_traffic_once_ready_and_smoke_tested():
    ticks = _rollout(stable=None)
    assert ticks.tick(1, canary_ready=True) == [] and ticks.state.phase == "readying"  # smoke test pending
    assert ticks.tick(1, canary_ready=True, smoke_passed=True) == [SetTraffic(100), MoveChampion(None, "4")]
    assert ticks.state.phase == "promoted" and "first deployment" in ticks.state.reason


def test_a_failed_smoke_test_or_a_canary_that_never_answers_rolls_back():
    smoke = _rollout()
    assert smoke.tick(1, canary_ready=True, smoke_passed=False) == [SetTraffic(0), StopCanary()]
    assert smoke.state.phase == "rolled_back" and "smoke test" in smoke.state.reason
    never = _rollout()
    never.tick(PLAN.inconclusive_deadline_seconds + 1)
    assert never.state.phase == "rolled_back" and "never became ready" in never.state.reason


def test_a_canary_answering_5xx_is_rolled_back_after_the_failed_windows_in_a_row_with_its_figures():
    ticks = _rollout()
    ticks.ready()
    failing = Figures(requests=200, server_errors=50, p95_ms=20.0)  # 25% errors
    assert ticks.window(failing) == [] and ticks.state.failed_in_a_row == 1
    assert ticks.window(failing) == [SetTraffic(0), StopCanary()]
    last = ticks.decisions[-1]
    assert ticks.state.phase == "rolled_back" and "2 failed windows in a row" in last.reason
    assert "error rate 0.250 over 0.02" in last.reason and last.figures["canary_error_rate"] == 0.25
    assert not any(isinstance(a, MoveChampion) for actions in ticks.actions for a in actions)  # registry untouched


def test_a_passing_window_between_two_failures_resets_the_count():
    ticks = _rollout()
    ticks.ready()
    failing = Figures(requests=200, server_errors=50, p95_ms=20.0)
    ticks.window(failing)
    ticks.window()  # passes: the next step, and the count starts again
    assert ticks.state.failed_in_a_row == 0 and ticks.state.weight == 50
    ticks.window(failing)
    assert ticks.state.phase == "analysing" and ticks.state.failed_in_a_row == 1


def test_limits_relative_to_stable_catch_what_absolute_ones_allow():
    """A canary 5x slower than stable, or with many more errors than it, fails though under the absolute limits."""
    slow = Figures(requests=200, server_errors=0, p95_ms=100.0)
    assert judge(PLAN, slow, Figures(1000, 0, 20.0))[0] == "failed"
    assert "over 2.0x stable's 20.0 ms" in judge(PLAN, slow, Figures(1000, 0, 20.0))[1]
    worse = Figures(requests=1000, server_errors=19, p95_ms=20.0)  # 1.9%: under the 2% absolute limit
    assert judge(PLAN, worse, Figures(1000, 0, 20.0))[0] == "failed"
    assert judge(PLAN, worse, Figures(1000, 15, 20.0))[0] == "passed"  # stable is as bad: not the canary's fault
    assert judge(PLAN, Figures(200, 0, None), STABLE) == ("failed", "no latency figures for the canary")


def test_thin_traffic_asks_for_synthetic_requests_instead_of_stalling_or_passing():
    """Below the minimum the window is inconclusive (never passed), and a window's worth of synthetic
    requests is sent to the canary."""
    ticks = _rollout()
    ticks.ready()
    thin = Figures(requests=12, server_errors=0, p95_ms=15.0)
    assert ticks.window(thin) == [SendSynthetic(50)]
    assert ticks.decisions[-1].verdict == "inconclusive" and ticks.state.weight == 10
    assert ticks.window() == [SetTraffic(50)]  # the next window, with the synthetic requests in it, is judged


def test_an_inconclusive_canary_past_its_deadline_does_what_the_plan_says():
    thin = Figures(requests=0, server_errors=0, p95_ms=None)
    for when, phase, actions in (
        ("roll_back", "rolled_back", [SetTraffic(0), StopCanary()]),
        ("promote", "promoted", [SetTraffic(100), MoveChampion("3", "4"), RetireStable()]),
        ("pause", "paused", []),
    ):
        plan = replace(PLAN, when_inconclusive=when, inconclusive_deadline_seconds=100, synthetic_traffic=False)
        ticks = Ticks(start("4", "3", now=0.0), plan)
        ticks.ready()
        ticks.window(thin)
        ticks.window(thin)
        assert ticks.window(thin) == actions and ticks.state.phase == phase, when
        assert "deadline" in ticks.decisions[-1].reason


def test_manual_commands_pause_resume_promote_and_abort():
    ticks = _rollout()
    ticks.ready()
    assert ticks.tick(1, command="pause", command_by="ops@example.com") == []
    assert ticks.state.phase == "paused" and ticks.window(Figures(200, 100, 20.0)) == []  # paused: not judged
    ticks.tick(1, command="resume")
    assert ticks.state.phase == "analysing" and ticks.state.weight == 10
    assert ticks.tick(1, command="promote", command_by="ops@example.com") == [
        SetTraffic(100),
        MoveChampion("3", "4"),
        RetireStable(),
    ]
    assert ticks.state.reason == "promoted by ops@example.com"
    aborted = _rollout()
    aborted.ready()
    assert aborted.tick(1, command="abort", command_by="ops") == [SetTraffic(0), StopCanary()]
    assert aborted.state.phase == "rolled_back" and aborted.state.reason == "aborted by ops"


def test_a_newer_version_supersedes_the_canary_traffic_back_to_stable_registry_untouched():
    ticks = _rollout()
    ticks.ready()
    ticks.window()
    assert ticks.tick(1, superseded_by="5") == [SetTraffic(0), StopCanary()]
    assert ticks.state.phase == "superseded" and "version 5" in ticks.state.reason


def test_the_plan_is_the_pipeline_specs_serving_section_field_for_field():
    """Every knob of the spec reaches the decision (none forgotten on the way), and the steps are checked."""
    import dataclasses

    import pytest
    from pydantic import ValidationError

    from ctflow.pipelines import load_spec
    from ctflow.settings import REPO_ROOT

    spec_fields = set(ServingSpec.model_fields) - {"service", "canary_steps"}
    assert {f.name for f in dataclasses.fields(Plan)} == spec_fields | {"steps"}
    digits = load_spec(REPO_ROOT / "deploy" / "pipelines" / "digits.yaml").serving
    assert plan_of(digits).steps == tuple(digits.canary_steps)
    for steps in ([50, 10, 100], [10, 50]):
        with pytest.raises(ValidationError, match="increase and end at 100"):
            ServingSpec(service="x", canary_steps=steps)


def test_a_window_is_judged_only_once_its_figures_are_complete_and_the_next_one_starts_at_the_decision():
    """Cloud Monitoring's figures arrive up to minutes late: a window that has ended in time but not in data
    stays open; once judged, the next window and its warm-up start from the decision (when traffic moved)."""
    ticks = _rollout()
    ticks.ready()
    lag = 180.0
    over = PLAN.warmup_seconds + PLAN.analysis_interval_seconds
    assert ticks.tick(over, canary=GOOD, stable=STABLE, complete_until=ticks.now + over - lag) == []
    assert ticks.decisions[-1].reason == "window open"
    assert ticks.tick(lag, canary=GOOD, stable=STABLE, complete_until=ticks.now + lag - lag) == [SetTraffic(50)]
    assert ticks.state.window_started_at == ticks.now + PLAN.warmup_seconds  # from the decision, not the horizon
