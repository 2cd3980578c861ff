"""Every file the trainer reads or writes goes through here: local paths, `file://` and `gs://`.

A location is a string: a plain path, a `file://` URI or `gs://bucket/prefix`. Local
writes are atomic (temporary file, then rename), so a killed process never leaves a
half-written checkpoint or report; a GCS upload is atomic by nature. The
google-cloud-storage client is imported and built only when a `gs://` URI is used.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit


def is_gcs(uri: str) -> bool:
    return uri.startswith("gs://")


def local_path(uri: str) -> Path:
    """The filesystem path of a plain path or `file://` URI."""
    if uri.startswith("file://"):
        return Path(unquote(urlsplit(uri).path))
    if "://" in uri:
        raise ValueError(f"unsupported URI scheme in {uri!r}; use a local path, file:// or gs://")
    return Path(uri)


def join(base: str, name: str) -> str:
    if is_gcs(base) or base.startswith("file://"):
        return base.rstrip("/") + "/" + name
    return str(Path(base) / name)


@functools.cache
def _gcs_client() -> Any:
    from google.cloud import storage  # only jobs that touch gs:// pay for this import

    return storage.Client()


def _blob(uri: str) -> Any:
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket or not name:
        raise ValueError(f"{uri!r} does not name an object (gs://bucket/path)")
    return _gcs_client().bucket(bucket).blob(name)


def _not_found() -> type[Exception]:
    from google.api_core.exceptions import NotFound

    return NotFound


def open_read(uri: str) -> IO[bytes]:
    """Open for binary reading; FileNotFoundError when absent (for manifest.verify_files)."""
    if not is_gcs(uri):
        return local_path(uri).open("rb")
    return io.BytesIO(read_bytes(uri))


def read_bytes(uri: str) -> bytes:
    if not is_gcs(uri):
        return local_path(uri).read_bytes()
    try:
        return _blob(uri).download_as_bytes()
    except _not_found():
        raise FileNotFoundError(uri) from None


def write_bytes(uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    if is_gcs(uri):
        _blob(uri).upload_from_string(data, content_type=content_type)
        return
    path = local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def download(uri: str, dest: Path) -> None:
    """Copy one object or file to a local path (streamed, not held in memory)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not is_gcs(uri):
        shutil.copyfile(local_path(uri), dest)
        return
    try:
        _blob(uri).download_to_filename(str(dest))
    except _not_found():
        raise FileNotFoundError(uri) from None


def upload_dir(local_dir: Path, dest_uri: str) -> None:
    """Copy the files of a local folder (not recursive) into a folder URI."""
    for path in sorted(p for p in local_dir.iterdir() if p.is_file()):
        if is_gcs(dest_uri):
            _blob(join(dest_uri, path.name)).upload_from_filename(str(path))
        else:
            write_bytes(join(dest_uri, path.name), path.read_bytes())


def list_names(dir_uri: str) -> list[str]:
    """Names of the files directly inside a folder URI; empty when it does not exist."""
    if is_gcs(dir_uri):
        bucket, _, prefix = dir_uri[len("gs://") :].partition("/")
        prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        blobs = _gcs_client().list_blobs(bucket, prefix=prefix, delimiter="/")
        return sorted(b.name[len(prefix) :] for b in blobs)
    path = local_path(dir_uri)
    return sorted(p.name for p in path.iterdir() if p.is_file()) if path.is_dir() else []


def delete(uri: str) -> None:
    """Remove a file or object; absent is fine."""
    if is_gcs(uri):
        try:
            _blob(uri).delete()
        except _not_found():
            pass
        return
    local_path(uri).unlink(missing_ok=True)
