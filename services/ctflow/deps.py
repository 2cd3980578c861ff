"""What handlers may use, built by the composition root (ctflow.bootstrap).

Handlers see ports only; which adapter stands behind each is decided in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .blobstore import BlobStore
    from .bus import MessageBus
    from .bus.relay import OutboxRelay
    from .ledger import Ledger
    from .pipelines import PipelineCatalog
    from .settings import Settings

Authenticator = Callable[[Mapping[str, str]], None]
InvokerHeaders = Callable[[str], dict[str, str]]  # headers that let this service call another URL


@dataclass
class Dependencies:
    settings: Settings
    ledger: Ledger
    pipelines: PipelineCatalog
    blobs: BlobStore
    bus: MessageBus
    relay: OutboxRelay
    authenticate: Authenticator
    invoker_headers: InvokerHeaders
