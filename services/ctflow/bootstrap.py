"""The composition root: the only place that chooses adapters by mode.

Handlers and services receive a `Dependencies` and never learn which mode they run in.
"""

from __future__ import annotations

from collections.abc import Callable

from .bus.relay import OutboxRelay
from .deps import Dependencies
from .ledger import Ledger
from .pipelines import PipelineCatalog
from .settings import Settings


def build(settings: Settings | None = None, *, on_publish: Callable[[], None] | None = None) -> Dependencies:
    settings = settings or Settings()
    ledger = Ledger(settings.ledger_url)
    if settings.mode == "embedded":
        from .auth import allow_loopback, no_invoker_headers
        from .blobstore.local import LocalFolderBlobStore
        from .bus.ledger_bus import LedgerBus

        settings.home.mkdir(parents=True, exist_ok=True)
        ledger.migrate()
        blobs = LocalFolderBlobStore(settings.bucket_dir)
        bus = LedgerBus(ledger, on_publish)
        authenticate, invoker_headers = allow_loopback, no_invoker_headers
        make_training = _adapter("ctflow.training.local:LocalProcessBackend")
    else:
        from .auth import GoogleOidcVerifier, google_invoker_headers
        from .blobstore.gcs import GcsBlobStore
        from .bus.pubsub_bus import PubSubBus

        assert settings.bucket and settings.gcp_project  # enforced by Settings
        blobs = GcsBlobStore(settings.bucket, project=settings.gcp_project)
        bus = PubSubBus(settings.gcp_project)
        authenticate = GoogleOidcVerifier(settings.oidc_audience, settings.allowed_invokers)
        invoker_headers = google_invoker_headers
        make_training = _adapter("ctflow.training.vertex:VertexBackend")
    return Dependencies(
        settings=settings,
        ledger=ledger,
        pipelines=PipelineCatalog(settings.pipelines_dir),
        blobs=blobs,
        bus=bus,
        relay=OutboxRelay(ledger, bus),
        authenticate=authenticate,
        invoker_headers=invoker_headers,
        make_training=make_training,
        make_registry=_adapter("ctflow.registry:ModelRegistry"),
    )


def _adapter(ref: str) -> Callable[[Dependencies], object]:
    """A factory that imports `module:Class` on first use and builds it from the settings."""
    def make(deps: Dependencies) -> object:
        from .service import load_ref

        return load_ref(ref)(deps.settings)
    return make
