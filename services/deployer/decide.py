"""The rollout decision, one pure function per tick: `decide(state, plan, observation) -> (state, actions, decision)`.

A rollout moves a candidate model version into an environment's serving service. Each
reconcile tick the deployer re-reads the rollout, observes (is the canary ready, what
did it and the stable revision answer in the window), calls `decide`, persists the new
state and the decision with the figures it was made on, then carries out the actions.
Nothing here does I/O, so tests drive a rollout tick by tick.

Phases:
- `readying`: the canary revision exists with 0% traffic; wait until it answers
  (readiness is a model that predicts, not a process that is up) and its smoke test
  passed. A first deployment (nothing serving yet) then goes to 100% at once.
- `analysing`: the canary has `plan.steps[step]` percent. After every traffic change a
  warm-up is left out; then each window of `plan.analysis_interval_seconds` is judged:
  passed (the step advances; reaching the last step, 100%, is the promotion: traffic and
  the champion alias move together, so the champion is always what has the traffic), failed
  (`plan.failed_windows` failures in a row roll back), or inconclusive (too few canary
  requests: synthetic requests are asked for when the plan allows, so the analysis
  neither stalls nor passes a canary nobody called). Inconclusive for longer than
  `plan.inconclusive_deadline_seconds` since the step began does what the plan says.
- `paused` (by hand) holds traffic until resumed; `promoted`, `rolled_back` and
  `superseded` are final.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from ctflow.states import ROLLOUT_FINAL, RolloutPhase

Phase = RolloutPhase
Command = Literal["promote", "abort", "pause", "resume"]
Verdict = Literal["passed", "failed", "inconclusive"]


@dataclass(frozen=True)
class Plan:
    """How a canary is stepped and judged: the pipeline spec's serving section (ctflow.contracts.ServingSpec,
    where each field is described and defaulted) as deployer.plan.plan_of reads it."""

    steps: tuple[int, ...]  # canary percent at each step, increasing, the last 100
    analysis_interval_seconds: float
    warmup_seconds: float
    min_requests: int
    max_error_rate: float
    max_error_rate_increase: float
    max_p95_latency_ms: float
    max_p95_latency_ratio: float
    failed_windows: int
    inconclusive_deadline_seconds: float
    when_inconclusive: Literal["roll_back", "promote", "pause"]
    synthetic_traffic: bool


@dataclass(frozen=True)
class Figures:
    """One revision's answers in the window: client errors (4xx) are not counted at all."""

    requests: int
    server_errors: int
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.server_errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Observation:
    now: float  # seconds (epoch)
    canary_ready: bool = False
    smoke_passed: bool | None = None  # None: not run yet
    canary: Figures | None = None  # over [state.window_started_at, now]
    stable: Figures | None = None
    command: Command | None = None
    command_by: str = ""
    superseded_by: str | None = None  # a newer version registered for this environment
    # The figures are complete up to here (epoch seconds; None: up to `now`). A backend whose figures
    # arrive late (Cloud Monitoring) has a window judged only once they are complete to its end.
    complete_until: float | None = None

    @property
    def horizon(self) -> float:
        return self.now if self.complete_until is None else min(self.now, self.complete_until)


@dataclass(frozen=True)
class State:
    phase: Phase
    candidate: str  # model version rolling out
    stable: str | None  # the version serving when the rollout began (None: first deployment)
    step: int = 0  # index into plan.steps while analysing
    weight: int = 0  # canary percent now
    window_started_at: float = 0.0
    step_started_at: float = 0.0
    failed_in_a_row: int = 0
    reason: str = ""  # why it is where it is (final phases, pauses)


@dataclass(frozen=True)
class SetTraffic:
    canary_percent: int


@dataclass(frozen=True)
class SendSynthetic:
    requests: int  # to the canary only (its tag URL)


@dataclass(frozen=True)
class MoveChampion:
    expected: str | None  # compare-and-swap: the alias must still name the version stable at the start
    to: str


@dataclass(frozen=True)
class StopCanary:
    pass


@dataclass(frozen=True)
class RetireStable:
    """After a promotion: the old stable revision, now without traffic, is stopped."""


Action = SetTraffic | SendSynthetic | MoveChampion | StopCanary | RetireStable
ACTION_TYPES: dict[str, type[Action]] = {
    cls.__name__: cls for cls in (SetTraffic, SendSynthetic, MoveChampion, StopCanary, RetireStable)
}


def action_to_json(action: Action) -> dict[str, Any]:
    return {"action": type(action).__name__, **asdict(action)}


def action_from_json(doc: dict[str, Any]) -> Action:
    fields = {k: v for k, v in doc.items() if k != "action"}
    return ACTION_TYPES[doc["action"]](**fields)


@dataclass(frozen=True)
class Decision:
    """What one tick decided and the figures it was decided on (persisted with the rollout)."""

    at: float
    phase: Phase
    weight: int
    verdict: Verdict | None
    reason: str
    figures: dict[str, float | int | None] = field(default_factory=dict)


def state_to_json(state: State) -> dict[str, Any]:
    """The state as the ledger keeps it (ctflow.ledger.rollouts)."""
    return asdict(state)


def state_from_json(doc: dict[str, Any]) -> State:
    return State(**doc)


def start(candidate: str, stable: str | None, now: float) -> State:
    """A new rollout: the canary revision is being created with 0% traffic."""
    return State("readying", candidate, stable, window_started_at=now, step_started_at=now)


def decide(state: State, plan: Plan, seen: Observation) -> tuple[State, list[Action], Decision]:
    """The next state, the actions to carry out, and the decision to record."""
    if state.phase in ROLLOUT_FINAL:
        return state, [], _decision(state, seen, None, f"{state.phase}; nothing to do")
    if seen.superseded_by is not None:
        reason = f"superseded by version {seen.superseded_by}: traffic back to the stable revision"
        return _end(state, seen, "superseded", reason)
    if seen.command is not None:
        return _command(state, plan, seen)
    if state.phase == "paused":
        return state, [], _decision(state, seen, None, f"paused: {state.reason}")
    if state.phase == "readying":
        return _readying(state, plan, seen)
    return _analysing(state, plan, seen)


def _readying(state: State, plan: Plan, seen: Observation) -> tuple[State, list[Action], Decision]:
    if not seen.canary_ready:
        if seen.now - state.step_started_at > plan.inconclusive_deadline_seconds:
            return _end(state, seen, "rolled_back", "the canary revision never became ready")
        return state, [], _decision(state, seen, None, "waiting for the canary to answer a prediction")
    if seen.smoke_passed is False:
        return _end(state, seen, "rolled_back", "the canary failed its smoke test")
    if seen.smoke_passed is None:
        return state, [], _decision(state, seen, None, "canary ready; waiting for its smoke test")
    if state.stable is None:  # nothing serves: no stable revision to compare with or to protect
        return _promote(state, seen, "first deployment: ready and smoke-tested, 100% at once")
    return _set_step(state, plan, seen, 0, "canary ready and smoke-tested")


def _analysing(state: State, plan: Plan, seen: Observation) -> tuple[State, list[Action], Decision]:
    if seen.horizon < state.window_started_at + plan.analysis_interval_seconds:
        return state, [], _decision(state, seen, None, "window open")
    canary, stable = seen.canary or Figures(0, 0, None), seen.stable
    figures = _figures(canary, stable)
    verdict, why = judge(plan, canary, stable)
    if verdict == "passed":
        if state.step + 1 >= len(plan.steps):
            return _promote(state, seen, f"last step passed: {why}", figures)
        return _set_step(state, plan, seen, state.step + 1, f"step {state.step + 1} passed: {why}", figures)
    if verdict == "failed":
        failed = state.failed_in_a_row + 1
        if failed >= plan.failed_windows:
            return _end(state, seen, "rolled_back", f"{failed} failed windows in a row; the last: {why}", figures)
        next_state = replace(state, failed_in_a_row=failed, window_started_at=seen.now)
        return (
            next_state,
            [],
            _decision(next_state, seen, "failed", f"window failed ({failed} in a row): {why}", figures),
        )
    # Inconclusive: too few requests to judge.
    if seen.now - state.step_started_at > plan.inconclusive_deadline_seconds:
        return _inconclusive_deadline(state, plan, seen, why, figures)
    next_state = replace(state, window_started_at=seen.now)
    actions: list[Action] = []
    if plan.synthetic_traffic:
        # A window's worth, not the last window's shortfall: live traffic that was thin stays thin, and the
        # next window must be judged, not found short again.
        actions.append(SendSynthetic(plan.min_requests))
        why += f"; sending {plan.min_requests} synthetic requests to the canary"
    return next_state, actions, _decision(next_state, seen, "inconclusive", why, figures)


def judge(plan: Plan, canary: Figures, stable: Figures | None) -> tuple[Verdict, str]:
    """One window's verdict on the canary, compared with the limits and with the stable revision."""
    if canary.requests < plan.min_requests:
        return "inconclusive", f"{canary.requests} canary requests, fewer than the {plan.min_requests} a window needs"
    problems = []
    if canary.error_rate > plan.max_error_rate:
        problems.append(f"error rate {canary.error_rate:.3f} over {plan.max_error_rate}")
    if stable is not None and stable.requests and canary.error_rate > stable.error_rate + plan.max_error_rate_increase:
        problems.append(
            f"error rate {canary.error_rate:.3f} over stable's {stable.error_rate:.3f} + {plan.max_error_rate_increase}"
        )
    if canary.p95_ms is None:
        problems.append("no latency figures for the canary")
    else:
        if canary.p95_ms > plan.max_p95_latency_ms:
            problems.append(f"p95 {canary.p95_ms:.1f} ms over {plan.max_p95_latency_ms} ms")
        if stable is not None and stable.p95_ms and canary.p95_ms > plan.max_p95_latency_ratio * stable.p95_ms:
            problems.append(
                f"p95 {canary.p95_ms:.1f} ms over {plan.max_p95_latency_ratio}x stable's {stable.p95_ms:.1f} ms"
            )
    if problems:
        return "failed", "; ".join(problems)
    return "passed", f"{canary.requests} requests, error rate {canary.error_rate:.3f}, p95 {canary.p95_ms:.1f} ms"


def _command(state: State, plan: Plan, seen: Observation) -> tuple[State, list[Action], Decision]:
    who = f" by {seen.command_by}" if seen.command_by else ""
    if seen.command == "abort":
        return _end(state, seen, "rolled_back", f"aborted{who}")
    if seen.command == "promote":
        if state.phase == "readying" and not seen.canary_ready:
            return state, [], _decision(state, seen, None, f"promotion{who} refused: the canary does not answer yet")
        return _promote(state, seen, f"promoted{who}")
    if seen.command == "pause":
        paused = replace(state, phase="paused", reason=f"paused{who}")
        return paused, [], _decision(paused, seen, None, paused.reason)
    if state.phase != "paused":  # resume of a rollout that is not paused
        return state, [], _decision(state, seen, None, f"resume{who}: not paused")
    resumed = replace(
        state,
        phase="analysing" if state.weight else "readying",
        window_started_at=seen.now + plan.warmup_seconds,
        step_started_at=seen.now,
        reason="",
    )
    return resumed, [], _decision(resumed, seen, None, f"resumed{who}")


def _inconclusive_deadline(
    state: State, plan: Plan, seen: Observation, why: str, figures: dict[str, float | int | None]
) -> tuple[State, list[Action], Decision]:
    reason = f"inconclusive past the {plan.inconclusive_deadline_seconds:.0f} s deadline ({why})"
    if plan.when_inconclusive == "promote":
        return _promote(state, seen, f"{reason}: the plan promotes", figures)
    if plan.when_inconclusive == "pause":
        paused = replace(state, phase="paused", reason=f"{reason}: the plan pauses for a person")
        return paused, [], _decision(paused, seen, "inconclusive", paused.reason, figures)
    return _end(state, seen, "rolled_back", f"{reason}: the plan rolls back", figures)


def _set_step(
    state: State,
    plan: Plan,
    seen: Observation,
    step: int,
    why: str,
    figures: dict[str, float | int | None] | None = None,
) -> tuple[State, list[Action], Decision]:
    weight = plan.steps[step]
    if weight == 100:  # the last step: all traffic to the canary is its promotion (champion and traffic move together)
        return _promote(state, seen, f"{why}; the last step is 100%: promoted", figures)
    next_state = replace(
        state,
        phase="analysing",
        step=step,
        weight=weight,
        failed_in_a_row=0,
        window_started_at=seen.now + plan.warmup_seconds,  # the warm-up is left out of the next window
        step_started_at=seen.now,
    )
    verdict: Verdict | None = "passed" if figures else None
    return (
        next_state,
        [SetTraffic(weight)],
        _decision(next_state, seen, verdict, f"{why}; canary to {weight}%", figures),
    )


def _promote(
    state: State, seen: Observation, why: str, figures: dict[str, float | int | None] | None = None
) -> tuple[State, list[Action], Decision]:
    done = replace(state, phase="promoted", weight=100, reason=why)
    actions: list[Action] = [SetTraffic(100), MoveChampion(expected=state.stable, to=state.candidate)]
    if state.stable is not None:
        actions.append(RetireStable())
    return done, actions, _decision(done, seen, "passed" if figures else None, why, figures)


def conflict(state: State, now: float, champion: str | None) -> tuple[State, list[Action], Decision]:
    """A promotion the registry refused: the champion alias no longer names the version stable at the start."""
    why = (
        f"the champion alias names version {champion or '(none)'}, not {state.stable or '(none)'} as when the "
        "rollout began: traffic back to the stable revision, registry untouched"
    )
    return _end(state, Observation(now=now), "conflict", why)


def give_up(state: State, now: float, why: str) -> tuple[State, list[Action], Decision]:
    """A rollout that cannot go on whatever it observes (its version cannot be packaged): rolled back."""
    return _end(state, Observation(now=now), "rolled_back", why)


def _end(
    state: State, seen: Observation, phase: Phase, why: str, figures: dict[str, float | int | None] | None = None
) -> tuple[State, list[Action], Decision]:
    """Roll back or supersede: all traffic to stable, the canary stopped, the registry untouched."""
    done = replace(state, phase=phase, weight=0, reason=why)
    actions: list[Action] = [SetTraffic(0), StopCanary()]
    return done, actions, _decision(done, seen, "failed" if phase == "rolled_back" and figures else None, why, figures)


def _figures(canary: Figures, stable: Figures | None) -> dict[str, float | int | None]:
    out: dict[str, float | int | None] = {
        "canary_requests": canary.requests,
        "canary_error_rate": round(canary.error_rate, 4),
        "canary_p95_ms": canary.p95_ms,
    }
    if stable is not None:
        out |= {
            "stable_requests": stable.requests,
            "stable_error_rate": round(stable.error_rate, 4),
            "stable_p95_ms": stable.p95_ms,
        }
    return out


def _decision(
    state: State,
    seen: Observation,
    verdict: Verdict | None,
    reason: str,
    figures: dict[str, float | int | None] | None = None,
) -> Decision:
    return Decision(seen.now, state.phase, state.weight, verdict, reason, figures or {})
