"""Carry out a decision's actions on the serving backend and the registry, each safe to repeat.

The actions were kept with the decision (`rollouts.pending`) in the tick's transaction, so
whatever a crash interrupts here the next tick carries out again: a traffic split is set
whole (the same split twice is one split), a stopped revision stays stopped, and the
champion alias moves by compare-and-swap, which succeeds again when it already points to
the candidate.

Registry and serving agree after every tick: the champion is the version that has the
traffic (the stable one while a canary runs, the candidate once promoted). Promotion
checks the alias before any traffic moves, so a champion moved by someone else since the
rollout began ends it in a recorded conflict with stable still serving.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctflow.registry import CHAMPION, PREVIOUS, AliasMoved
from ctflow.serving import Revision, traffic_split

from .decide import Action, MoveChampion, RetireStable, SendSynthetic, SetTraffic, StopCanary
from .traffic import holdout_instances, send_synthetic

if TYPE_CHECKING:
    from ctflow.deps import Dependencies


class ChampionMoved(Exception):
    """The champion alias no longer names the version that was stable when the rollout began."""

    def __init__(self, champion: str | None) -> None:
        super().__init__(f"the champion alias names {champion or '(none)'}")
        self.champion = champion


@dataclass(frozen=True)
class Target:
    """What a rollout's actions act on."""

    pipeline: str
    service: str
    canary: Revision | None
    stable_revision: str | None  # None: nothing served when the rollout began

    @classmethod
    def of(cls, pipeline: str, serving: dict[str, Any]) -> Target:
        canary = serving.get("revision")
        return cls(
            pipeline,
            serving["service"],
            Revision.from_json(canary) if canary else None,
            serving.get("stable_revision"),
        )

    def split(self, canary_percent: int) -> dict[str, int]:
        return traffic_split(self.canary.name if self.canary else None, self.stable_revision, canary_percent)


def check_champion(deps: Dependencies, target: Target, actions: list[Action]) -> None:
    """Before a promotion moves traffic: ChampionMoved if the alias is neither where it began nor moved already."""
    for action in actions:
        if isinstance(action, MoveChampion):
            current = deps.registry.champion(target.pipeline)
            version = current.version if current else None
            if version not in (action.expected, action.to):
                raise ChampionMoved(version)


def carry_out(deps: Dependencies, target: Target, actions: list[Action], *, budget_seconds: float) -> None:
    """Each action in order; ChampionMoved when the compare-and-swap is refused (the caller records the conflict)."""
    serving = deps.serving
    for action in actions:
        if isinstance(action, SetTraffic):
            if target.canary is None and action.canary_percent:
                continue  # never created (packaging failed): nothing to send traffic to
            serving.set_traffic(target.service, target.split(action.canary_percent))
        elif isinstance(action, MoveChampion):
            try:
                deps.registry.move_alias(target.pipeline, CHAMPION, action.to, action.expected)
            except AliasMoved:
                current = deps.registry.champion(target.pipeline)
                raise ChampionMoved(current.version if current else None) from None
            if action.expected is not None:
                deps.registry.set_alias(target.pipeline, PREVIOUS, action.expected)
        elif isinstance(action, StopCanary):
            if target.canary is not None:
                serving.stop_revision(target.service, target.canary.name)
        elif isinstance(action, RetireStable):
            if target.stable_revision is not None:
                serving.stop_revision(target.service, target.stable_revision)
        elif isinstance(action, SendSynthetic) and target.canary is not None:
            spec = deps.pipelines.get(target.pipeline)
            samples = holdout_instances(deps, spec) if spec else []
            url = serving.prediction_url(target.service, target.pipeline, target.canary.name)
            send_in_background(url, target.canary.probe, samples, action.requests, budget_seconds=budget_seconds)


_sending: set[str] = set()  # canary URLs with synthetic requests under way in this process
_sending_lock = threading.Lock()


def send_in_background(
    url: str, probe: dict[str, Any], samples: list[Any], count: int, *, budget_seconds: float
) -> bool:
    """Synthetic requests from a thread of their own, so the reconcile tick (every other rollout, every other
    step) does not wait for them; one batch per canary at a time. Nothing here needs to survive a crash: a
    window they miss is inconclusive again and asks for more. False when a batch is still under way."""
    with _sending_lock:
        if url in _sending:
            return False
        _sending.add(url)

    def run() -> None:
        try:
            send_synthetic(url, probe, samples, count, budget_seconds=budget_seconds)
        finally:
            with _sending_lock:
                _sending.discard(url)

    threading.Thread(target=run, name="synthetic-traffic", daemon=True).start()
    return True
