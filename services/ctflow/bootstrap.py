"""The composition root: the only place that chooses adapters by mode.

Handlers and services receive a `Dependencies` and never learn which mode they run in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .bus.relay import OutboxRelay
from .deps import Dependencies
from .ledger import Ledger
from .pipelines import PipelineCatalog
from .refs import load_ref
from .settings import Settings
from .topology import COMPLETION_HANDLER, EVENTS_TOPIC, publish_url

if TYPE_CHECKING:
    from .blobstore import BlobStore
    from .bus import MessageBus


def build(settings: Settings | None = None, *, on_publish: Callable[[], None] | None = None) -> Dependencies:
    settings = settings or Settings()
    ledger = embedded_ledger(settings) if settings.mode == "embedded" else Ledger(settings.ledger_url)
    bus = message_bus(settings, ledger, on_publish)
    if settings.mode == "embedded":
        from .auth import no_invoker_headers

        authenticate, invoker_headers = None, no_invoker_headers  # loopback only: no caller to check
        make_training = _adapter("ctflow.training.local:LocalProcessBackend")
        make_serving: Callable[[Dependencies], object] = embedded_serving
    else:
        from .auth import authenticator, google_invoker_headers

        authenticate = authenticator(settings.auth_mode, settings.oidc_audience, settings.allowed_invokers)
        invoker_headers = google_invoker_headers
        make_training = _adapter("ctflow.training.vertex:VertexBackend")
        make_serving = _adapter("ctflow.serving.cloudrun:CloudRunServing")
    return Dependencies(
        settings=settings,
        ledger=ledger,
        pipelines=PipelineCatalog(settings.pipelines_dir),
        blobs=blob_store(settings),
        bus=bus,
        relay=OutboxRelay(ledger, bus),
        authenticate=authenticate,
        invoker_headers=invoker_headers,
        make_training=make_training,
        make_serving=make_serving,
        make_registry=_adapter(
            "ctflow.registry.mlflow_registry:MlflowModelRegistry", artifact_root=mlflow_artifact_root(settings)
        ),
        trainer_report_uri=trainer_report_uri(settings),
    )


def embedded_ledger(settings: Settings) -> Ledger:
    """The embedded ledger in <home>, created and migrated on first use."""
    settings.home.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(settings.ledger_url)
    ledger.migrate()
    return ledger


def blob_store(settings: Settings) -> BlobStore:
    """The bucket: a local folder (embedded) or the GCS bucket (gcp)."""
    if settings.mode == "embedded":
        from .blobstore.local import LocalFolderBlobStore

        return LocalFolderBlobStore(settings.bucket_dir)
    from .blobstore.gcs import GcsBlobStore

    if not settings.bucket:
        raise ValueError("gcp mode needs a bucket: set CTFLOW_BUCKET (or pass --bucket)")
    return GcsBlobStore(settings.bucket, project=settings.gcp_project)


def message_bus(settings: Settings, ledger: Ledger | None, on_publish: Callable[[], None] | None = None) -> MessageBus:
    """The bus: stored in the ledger (embedded, which needs `ledger`) or Pub/Sub (gcp)."""
    if settings.mode == "embedded":
        from .bus.ledger_bus import LedgerBus

        assert ledger is not None, "the embedded bus lives in the ledger"
        return LedgerBus(ledger, on_publish)
    from .bus.pubsub_bus import PubSubBus

    assert settings.gcp_project  # enforced by Settings
    return PubSubBus(settings.gcp_project)


def mlflow_artifact_root(settings: Settings) -> Path | None:
    """Embedded: where experiments keep artifacts (<home>/mlartifacts); in gcp the MLflow server decides."""
    return settings.home / "mlartifacts" if settings.mode == "embedded" else None


def trainer_report_uri(settings: Settings) -> str | None:
    """Where training jobs report `training.completed` (the trainer's CTFLOW_REPORT_URI).

    The events topic, so every subscriber (completion-handler, job-launcher) hears it: Pub/Sub
    in gcp, the embedded stack's publish endpoint in embedded mode. A service running alone
    in embedded mode (no stack, so no bus endpoint) sends it to the completion-handler's URL,
    and the job-launcher learns how the job ended on its next reconcile tick.
    """
    if settings.mode == "gcp":
        return f"pubsub://projects/{settings.gcp_project}/topics/{EVENTS_TOPIC}"
    if settings.bus_url:
        return publish_url(settings.bus_url)
    return settings.service_urls.get(COMPLETION_HANDLER)


def client_bus(settings: Settings) -> MessageBus:
    """The bus a `ctflow` command publishes to: the embedded stack's (in its ledger) or Pub/Sub."""
    return message_bus(settings, embedded_ledger(settings) if settings.mode == "embedded" else None)


class NotEmbedded(Exception):
    """A command that runs the embedded stack was asked to in gcp mode."""


def require_embedded(settings: Settings, command: str) -> None:
    if settings.mode != "embedded":
        raise NotEmbedded(
            f"ctflow {command}: runs the embedded stack only; on Google Cloud, `skaffold run` deploys "
            "the services (unset CTFLOW_MODE=gcp to run it here)"
        )


def embedded_serving(deps: Dependencies) -> object:
    """TorchServe processes behind a weighted router, state in <home>/serving (imported on first use)."""
    from .serving.embedded import EmbeddedServing

    return EmbeddedServing(deps.settings, deps.blobs)


def _adapter(ref: str, **options: object) -> Callable[[Dependencies], object]:
    """A factory that imports `module:Class` on first use and builds it from the settings (and `options`)."""

    def make(deps: Dependencies) -> object:
        return load_ref(ref)(deps.settings, **options)

    return make
