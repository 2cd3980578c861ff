"""Every file the trainer reads or writes goes through here: local paths, `file://` and `gs://`.

A location is a string: a plain path, a `file://` URI or `gs://bucket/prefix`. Local
writes are atomic (temporary file, then rename), so a killed process never leaves a
half-written checkpoint or report (ctflow.atomic); a GCS upload is atomic by nature. GCS
goes through the services' adapter (ctflow.blobstore.gcs), whose client is imported and
built only when a `gs://` URI is used.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

from ctflow.atomic import write_atomically
from ctflow.blobstore import split_gs_uri
from ctflow.blobstore.gcs import GcsBlobStore, store_for


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


def _gcs(uri: str) -> tuple[GcsBlobStore, str]:
    """The bucket's store and the object name of a `gs://bucket/name` URI (ctflow.blobstore.gcs)."""
    split = split_gs_uri(uri)
    if split is None or not split[0] or not split[1]:
        raise ValueError(f"{uri!r} does not name an object (gs://bucket/path)")
    return store_for(split[0]), split[1]


def open_read(uri: str) -> IO[bytes]:
    """Open for binary reading; FileNotFoundError when absent (for manifest.verify_files)."""
    if not is_gcs(uri):
        return local_path(uri).open("rb")
    return io.BytesIO(read_bytes(uri))


def read_bytes(uri: str) -> bytes:
    if not is_gcs(uri):
        return local_path(uri).read_bytes()
    store, name = _gcs(uri)
    with store.open(name) as stream:
        return stream.read()


def write_bytes(uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    if is_gcs(uri):
        store, name = _gcs(uri)
        store.write_bytes(name, data, content_type)
        return
    write_atomically(local_path(uri), data)


def download(uri: str, dest: Path) -> None:
    """Copy one object or file to a local path (streamed, not held in memory)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not is_gcs(uri):
        shutil.copyfile(local_path(uri), dest)
        return
    store, name = _gcs(uri)
    store.download_to(name, dest)


def upload_dir(local_dir: Path, dest_uri: str) -> None:
    """Copy the files of a local folder (not recursive) into a folder URI."""
    for path in sorted(p for p in local_dir.iterdir() if p.is_file()):
        if is_gcs(dest_uri):
            store, name = _gcs(join(dest_uri, path.name))
            store.upload_file(name, path)
        else:
            write_bytes(join(dest_uri, path.name), path.read_bytes())


def list_names(dir_uri: str) -> list[str]:
    """Names of the files directly inside a folder URI; empty when it does not exist."""
    if is_gcs(dir_uri):
        bucket, prefix = split_gs_uri(dir_uri) or ("", "")
        return store_for(bucket).list_folder(prefix)
    path = local_path(dir_uri)
    return sorted(p.name for p in path.iterdir() if p.is_file()) if path.is_dir() else []


def delete(uri: str) -> None:
    """Remove a file or object; absent is fine."""
    if is_gcs(uri):
        store, name = _gcs(uri)
        store.delete(name)
        return
    local_path(uri).unlink(missing_ok=True)
