"""Dataset versions that arrived, keyed by the commit marker's object generation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from .sql import execute, insert_ignore
from .tables import DatasetVersion, table_of

_SEEN = "ctflow.datasets_seen"  # Session.info key: what `latest` read in this transaction


def record(session: Session, **values: Any) -> DatasetVersion | None:
    """Record a version; None when this marker generation was already recorded."""
    session.info.pop(_SEEN, None)
    if insert_ignore(session, DatasetVersion, values) is None:
        return None
    return DatasetVersion(**values)  # what was inserted; no need to read it back


def latest(session: Session, pipeline: str, version: str | None = None) -> DatasetVersion | None:
    """The newest recorded version of the pipeline (or the newest with that version name).

    Read on every hyperparameter message, so the statements are built once, the row comes
    back as a detached value (callers only read it), and a transaction that handles a
    batch of messages reads each (pipeline, version) once: only `record` changes it.
    """
    seen = session.info.setdefault(_SEEN, {})
    key = (pipeline, version)
    if key not in seen:
        statement, params = (
            (_LATEST, {"pipeline": pipeline})
            if version is None
            else (_LATEST_NAMED, {"pipeline": pipeline, "version": version})
        )
        row = execute(session, statement, params).first()
        seen[key] = DatasetVersion(**row._mapping) if row is not None else None
    return seen[key]


_COLUMNS = table_of(DatasetVersion).c
_NEWEST_FIRST = (_COLUMNS.arrived_at.desc(), _COLUMNS.id.desc())
_LATEST = select(*_COLUMNS).where(_COLUMNS.pipeline == bindparam("pipeline")).order_by(*_NEWEST_FIRST).limit(1)
_LATEST_NAMED = (
    select(*_COLUMNS)
    .where(_COLUMNS.pipeline == bindparam("pipeline"), _COLUMNS.version == bindparam("version"))
    .order_by(*_NEWEST_FIRST)
    .limit(1)
)


def as_ref(dv: DatasetVersion) -> dict[str, Any]:
    """The `dataset` object carried by events and shown on runs."""
    return {
        "version": dv.version,
        "uri": dv.uri,
        "manifest_uri": f"{dv.uri.rstrip('/')}/{dv.object_name.rsplit('/', 1)[-1]}",
        "manifest_sha256": dv.manifest_sha256,
        "generation": dv.generation,
        "bucket": dv.bucket,
        "total_bytes": dv.total_bytes,
        "files": dv.files,
    }
