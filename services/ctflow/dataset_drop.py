"""`ctflow drop`: upload a local folder as one dataset version, commit marker last."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from .blobstore import BlobStore
from .contracts import PipelineSpec
from .manifest import MARKER_NAME, build_manifest, iter_dataset_files, parse_manifest, verify_files


def drop_folder(folder: Path, spec: PipelineSpec, blobs: BlobStore, version: str | None = None) -> dict[str, str]:
    """Upload every file, then the marker; returns where the version landed."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    marker_path = folder / MARKER_NAME
    if marker_path.exists():
        raw = marker_path.read_bytes()
        manifest = parse_manifest(raw)
        verify_files(manifest, lambda p: (folder / p).open("rb"))  # refuse to upload a broken version
        paths = [folder / f.path for f in manifest.files]
    else:
        paths = list(iter_dataset_files(folder))
        if not paths:
            raise ValueError(f"{folder} holds no files to drop")
        raw = build_manifest(folder, paths, pipeline=spec.name)
        manifest = parse_manifest(raw)
    version = version or manifest.extra.get("version") or datetime.now(UTC).strftime("v%Y%m%dT%H%M%SZ")
    prefix = f"{spec.dataset.prefix}{version}/"
    for path in paths:
        blobs.write_bytes(prefix + path.relative_to(folder).as_posix(), path.read_bytes())
    blobs.write_bytes(prefix + spec.dataset.commit_marker, raw)
    return {
        "pipeline": spec.name,
        "version": str(version),
        "uri": blobs.uri(prefix),
        "manifest_sha256": manifest.sha256,
        "files": json.dumps(len(paths)),
    }
