"""What handlers may use, built by the composition root (ctflow.bootstrap).

Handlers see ports only; which adapter stands behind each is decided in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .blobstore import BlobStore
    from .bus import MessageBus
    from .bus.relay import OutboxRelay
    from .ledger import Ledger
    from .pipelines import PipelineCatalog
    from .registry import ModelRegistry
    from .serving import ServingBackend
    from .settings import Settings
    from .training import TrainingBackend

Authenticator = Callable[[Mapping[str, str]], None]
InvokerHeaders = Callable[[str], dict[str, str]]  # headers that let this service call another URL
AdapterFactory = Callable[["Dependencies"], Any]


def _not_configured(what: str) -> AdapterFactory:
    def refuse(deps: Dependencies) -> Any:
        raise RuntimeError(f"no {what} is configured for this process")

    return refuse


@dataclass
class Dependencies:
    settings: Settings
    ledger: Ledger
    pipelines: PipelineCatalog
    blobs: BlobStore
    bus: MessageBus
    relay: OutboxRelay
    authenticate: Authenticator | None  # None: callers are not checked (embedded: loopback only)
    invoker_headers: InvokerHeaders
    # Heavy clients (MLflow, Vertex AI) are imported on first use, not at start-up.
    make_training: AdapterFactory = field(default=_not_configured("training backend"), repr=False)
    make_registry: AdapterFactory = field(default=_not_configured("model registry"), repr=False)
    make_serving: AdapterFactory = field(default=_not_configured("serving backend"), repr=False)
    trainer_report_uri: str | None = None  # where training jobs report how they ended (bootstrap)

    @cached_property
    def training(self) -> TrainingBackend:
        """Where training jobs run: trainer processes (embedded) or Vertex AI CustomJobs (gcp)."""
        return self.make_training(self)

    def built(self, adapter: str) -> bool:
        """Whether the adapter `adapter` ("serving", "registry", ...) has been built in this process (asking for
        it builds it: an embedded serving backend starts routers)."""
        return adapter in self.__dict__  # where cached_property keeps what it built

    @cached_property
    def serving(self) -> ServingBackend:
        """Where models serve: TorchServe processes behind a weighted router (embedded) or Cloud Run revisions."""
        return self.make_serving(self)

    @cached_property
    def registry(self) -> ModelRegistry:
        """MLflow tracking and model registry."""
        return self.make_registry(self)
