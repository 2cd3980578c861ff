"""Process settings, read once from the environment (prefix `CTFLOW_`) by the composition root.

Validators refuse unsafe combinations: embedded mode binds loopback only, and gcp
mode must name its project, bucket and the identities allowed to invoke services.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


def _default_home() -> Path:
    return Path.home() / ".ctflow"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CTFLOW_", extra="ignore")

    mode: Literal["embedded", "gcp"] = "embedded"
    home: Path = Field(default_factory=_default_home)
    database_url: str | None = None  # default: SQLite in <home>/ledger.db
    pipelines_dir: Path = REPO_ROOT / "deploy" / "pipelines"
    schemas_dir: Path = REPO_ROOT / "schemas"
    host: str = "127.0.0.1"

    # Intake bounds.
    max_request_bytes: int = 1024 * 1024
    max_sweep_points: int = 64  # hard cap; a pipeline may set a lower one
    # Failed attempts at handling one event before it is kept as a dead letter with the error.
    # Below the embedded bus's bus_max_attempts and Pub/Sub's fewest delivery attempts (5), so
    # the service keeps the event and its reason before the sender gives up on it.
    max_handling_failures: int = Field(default=4, ge=1)

    # Embedded bus delivery.
    bus_max_attempts: int = 5
    bus_backoff_seconds: float = 0.5
    bus_backoff_max_seconds: float = 30.0
    bus_push_timeout_seconds: float = 30.0
    reconcile_interval_seconds: float = 5.0
    outbox_grace_seconds: float = 2.0
    watch_interval_seconds: float = 0.2

    # Training and registry. Embedded: trainer processes, MLflow on SQLite in <home>.
    # default embedded: sqlite:///<home>/mlflow.db. MLflow's own variable is honoured too.
    mlflow_tracking_uri: str | None = Field(
        None, validation_alias=AliasChoices("mlflow_tracking_uri", "CTFLOW_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI")
    )
    trainer_python: str | None = None  # embedded trainer interpreter; default: this one
    # gcp: skaffold's built images ({"trainer": "REGION-docker.pkg.dev/...@sha256:..."}).
    images: dict[str, str] = Field(default_factory=dict)
    trainer_service_account: str | None = None
    vertex_api_endpoint: str | None = None  # default: <region>-aiplatform.googleapis.com
    job_poll_grace_seconds: float = 10.0  # a job ended without reporting this long ago has failed

    # Serving. Embedded: the router refuses prediction bodies over this size (413).
    max_prediction_bytes: int = 2 * 1024 * 1024
    # gcp serving: Cloud Run Admin v2 and Cloud Monitoring endpoints (default: Google's; tests: a loopback fake),
    # and how late Monitoring's data may arrive (Cloud Run documents up to 180 s): a window is judged only
    # once it ended this long ago.
    cloud_run_api_endpoint: str | None = None
    monitoring_api_endpoint: str | None = None
    serving_metrics_delay_seconds: float = Field(default=180.0, ge=0)
    # How often the deployer's reconcile step ticks each rollout (embedded timer; gcp: Cloud Scheduler's).
    rollout_tick_seconds: float = Field(default=1.0, gt=0)

    # Where the status API sends dead-letter replays: {"dataset-listener": "http://..."}.
    service_urls: dict[str, str] = Field(default_factory=dict)
    # Embedded: the stack's bus publish endpoint (ctflow.embedded.publisher), set by `ctflow up`.
    bus_url: str | None = None

    # gcp mode.
    gcp_project: str | None = None
    gcp_region: str = "us-central1"
    bucket: str | None = None  # gcp: bucket name; embedded: defaults to <home>/bucket
    oidc_audience: str | None = None
    # cloud_run_iam: Cloud Run IAM verified the caller's token (it arrives without its signature): check its
    # claims. verify_signature: verify every token against Google's certificates (no Cloud Run IAM in front).
    auth_mode: Literal["cloud_run_iam", "verify_signature"] = "cloud_run_iam"
    allowed_invokers: list[str] = Field(default_factory=list)

    # What a gcp-mode service must be told (allowed_invokers: the identities allowed to call it).
    _gcp_requires: ClassVar[tuple[str, ...]] = (
        "gcp_project",
        "bucket",
        "database_url",
        "oidc_audience",
        "allowed_invokers",
    )

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.mode == "embedded":
            try:
                loopback = ipaddress.ip_address(self.host).is_loopback
            except ValueError:
                loopback = self.host == "localhost"
            if not loopback:
                raise ValueError(f"embedded mode binds loopback only; CTFLOW_HOST={self.host!r} is not")
        else:
            missing = [n for n in self._gcp_requires if not getattr(self, n)]
            if missing:
                raise ValueError(f"gcp mode needs CTFLOW_{', CTFLOW_'.join(m.upper() for m in missing)}")
        return self

    @property
    def ledger_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'ledger.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def jobs_dir(self) -> Path:
        """Embedded: one folder per training job (logs, model, checkpoints)."""
        return self.home / "jobs"

    @property
    def bucket_dir(self) -> Path:
        """The embedded bucket: a local folder that stands in for the GCS bucket."""
        return Path(self.bucket) if self.bucket else self.home / "bucket"


class ClientSettings(Settings):
    """What the `ctflow` command needs to act on a deployment: in gcp mode only the project
    (and a bucket to drop data into); never the database or the invoker identities."""

    _gcp_requires: ClassVar[tuple[str, ...]] = ("gcp_project",)
