"""The serving port: revisions of a model-serving service, traffic between them, and what each answered.

A *service* serves one pipeline in one environment (the spec's `serving.service`). A
*revision* is one model version's immutable server: the archive it serves (by URI and
sha256) fixes it. The deployer creates the canary revision with 0% traffic, waits for it
to be ready (a model that answers, not a process that is up), moves traffic in steps,
reads per-revision figures for each analysis window, and stops a revision that lost.

Adapters: `EmbeddedServing` (ctflow.serving.embedded: a TorchServe process per revision
behind a weighted router on one stable URL per service) and the Cloud Run one (run_v2
revisions, tags and traffic lists; Cloud Monitoring figures), arriving with gcp serving.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Protocol

CANARY_TAG = "canary"


@dataclass(frozen=True)
class Revision:
    """One model version's server: what the deployer asks a backend to run."""

    name: str  # deterministic (revision_name), so a retried creation names the same revision
    pipeline: str
    version: str
    archive_uri: str  # in the artifact store
    archive_sha256: str
    probe: dict[str, Any]  # a valid request body (one instance at the input spec): readiness and smoke test

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Revision:
        return cls(**doc)


@dataclass(frozen=True)
class RevisionFigures:
    """A revision's answers over a window: 5xx are server errors; 4xx client errors, never held against it."""

    requests: int  # answers that were not client errors
    server_errors: int
    client_errors: int
    p95_ms: float | None


class ServingError(RuntimeError):
    """The serving backend refused or failed a change (transient or not: the next tick tries again)."""


class ServingBackend(Protocol):
    # How late a revision's figures may arrive: a window is judged once it ended this long ago.
    metrics_delay_seconds: float

    def open(self, services: list[str]) -> dict[str, str]:
        """Make the services reachable (restoring what served before a restart); each one's URL."""

    def close(self) -> None:
        """Stop what this process runs for serving (nothing, where a platform runs it)."""

    def url(self, service: str) -> str | None:
        """Where the service's clients send predictions (None: it serves nothing yet)."""

    def create_revision(self, service: str, revision: Revision) -> None:
        """Start `revision` with 0% of traffic, reachable at its canary URL; nothing if it exists already."""

    def ready(self, service: str, revision: str) -> bool:
        """Whether the revision answers a prediction (its model loaded), not merely whether it runs."""

    def prediction_url(self, service: str, pipeline: str, revision: str | None = None) -> str:
        """Where predictions go: the service's split, or exactly one revision (the canary tag): smoke tests and
        synthetic traffic. The path is the same everywhere: `/v1/models/<pipeline>:predict` (KServe v1)."""

    def set_traffic(self, service: str, weights: dict[str, int]) -> None:
        """Send each revision its percent (the percents sum to 100; {}: nothing serves); others get none."""

    def traffic(self, service: str) -> dict[str, int]:
        """The split the service applies now, as observed (not as last asked for)."""

    def figures(self, service: str, revision: str, since: float, until: float) -> RevisionFigures:
        """What the revision answered between two times (epoch seconds), from whatever records them."""

    def stop_revision(self, service: str, revision: str) -> None:
        """Stop a revision that serves no traffic (a rolled-back or superseded canary, a replaced stable)."""


def traffic_split(canary: str | None, stable: str | None, canary_percent: int) -> dict[str, int]:
    """The whole split for a canary's share: the rest to stable; a first deployment (no stable) is all or nothing."""
    if stable is None:
        return {canary: 100} if canary is not None and canary_percent else {}
    weights: dict[str, int] = {}
    if canary is not None and canary_percent > 0:
        weights[canary] = canary_percent
    if canary_percent < 100:
        weights[stable] = 100 - canary_percent
    return weights


def revision_name(service: str, version: str, sha256: str) -> str:
    """`<service>-v<version>-<sha8>`: Cloud Run's rule (the service's prefix, lowercase letters, digits and
    hyphens, under 64 characters) and a different name for different bytes of the same version."""
    name = f"{service}-v{version}-{sha256[:8]}".lower()
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", name):
        raise ValueError(f"revision name {name!r} is not a valid Cloud Run revision name")
    return name
