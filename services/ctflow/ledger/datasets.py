"""Dataset versions that arrived, keyed by the commit marker's object generation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .sql import insert_ignore
from .tables import DatasetVersion


def record(session: Session, **values: Any) -> DatasetVersion | None:
    """Record a version; None when this marker generation was already recorded."""
    if insert_ignore(session, DatasetVersion, values) is None:
        return None
    return DatasetVersion(**values)  # what was inserted; no need to read it back


def latest(session: Session, pipeline: str, version: str | None = None) -> DatasetVersion | None:
    query = select(DatasetVersion).where(DatasetVersion.pipeline == pipeline)
    if version is not None:
        query = query.where(DatasetVersion.version == version)
    return session.scalars(query.order_by(DatasetVersion.arrived_at.desc(), DatasetVersion.id.desc()).limit(1)).first()


def as_ref(dv: DatasetVersion) -> dict[str, Any]:
    """The `dataset` object carried by events and shown on runs."""
    return {
        "version": dv.version, "uri": dv.uri,
        "manifest_uri": f"{dv.uri.rstrip('/')}/{dv.object_name.rsplit('/', 1)[-1]}",
        "manifest_sha256": dv.manifest_sha256, "generation": dv.generation, "bucket": dv.bucket,
        "total_bytes": dv.total_bytes, "files": dv.files,
    }
