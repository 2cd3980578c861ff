"""Run states and the transitions allowed between them.

A transition not listed here is refused, which fences late and duplicate events:
a completion that arrives after a run already failed cannot move it again.
"""

from __future__ import annotations

from typing import Literal, get_args

REQUESTED = "requested"
QUEUED = "queued"
TRAINING = "training"
EVALUATING = "evaluating"
REJECTED = "rejected"
REGISTERED = "registered"
ROLLING_OUT = "rolling_out"
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"
FAILED = "failed"
SUPERSEDED = "superseded"

# Every state, as a type (the status API's `state` filter) and as a tuple.
RunState = Literal[
    "requested",
    "queued",
    "training",
    "evaluating",
    "rejected",
    "registered",
    "rolling_out",
    "promoted",
    "rolled_back",
    "failed",
    "superseded",
]
ALL: tuple[str, ...] = get_args(RunState)

TRANSITIONS: dict[str, frozenset[str]] = {
    REQUESTED: frozenset({QUEUED, TRAINING, SUPERSEDED, FAILED}),
    QUEUED: frozenset({TRAINING, SUPERSEDED, FAILED}),
    TRAINING: frozenset({EVALUATING, FAILED}),
    EVALUATING: frozenset({REGISTERED, REJECTED, FAILED}),
    REGISTERED: frozenset({ROLLING_OUT, FAILED}),
    ROLLING_OUT: frozenset({PROMOTED, ROLLED_BACK, SUPERSEDED, FAILED}),
}
TERMINAL = frozenset(s for s in ALL if s not in TRANSITIONS)


class InvalidTransition(Exception):
    def __init__(self, run_id: str, current: str, target: str) -> None:
        super().__init__(f"run {run_id} cannot go from {current} to {target}")
        self.current, self.target = current, target


def check(run_id: str, current: str, target: str) -> None:
    if target not in TRANSITIONS.get(current, frozenset()):
        raise InvalidTransition(run_id, current, target)


# The phases of a rollout (deployer.decide moves between them; the ledger and the status API read them).
# `conflict`: the rollout passed but the champion alias had moved since it began (compare-and-swap
# refused), so it ended with traffic back on stable and the registry untouched.
RolloutPhase = Literal["readying", "analysing", "paused", "promoted", "rolled_back", "superseded", "conflict"]
ROLLOUT_FINAL: frozenset[str] = frozenset({"promoted", "rolled_back", "superseded", "conflict"})
