"""Google Cloud Storage as the bucket (google-cloud-storage, imported on first use).

Beside the BlobStore port, the few object operations a training job needs (download to
a file, upload a file, list a folder, delete): the trainer reaches GCS only through
here (ctflow_trainer.uris), so there is one implementation of each. Importing this
module needs only the standard library; the client loads with the first call.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import IO, Any

from ..manifest import safe_relative_path
from . import BlobInfo


class GcsBlobStore:
    def __init__(self, bucket: str, client: Any = None, project: str | None = None) -> None:
        self.bucket = bucket
        self._client = client
        self._project = project

    @property
    def _bucket(self) -> Any:
        if self._client is None:
            from google.cloud import storage

            self._client = storage.Client(project=self._project)
        return self._client.bucket(self.bucket)

    def open(self, name: str) -> IO[bytes]:
        from google.api_core.exceptions import NotFound

        blob = self._bucket.blob(safe_relative_path(name))
        try:
            blob.reload()
        except NotFound:
            raise FileNotFoundError(name) from None
        return blob.open("rb")

    def read_bytes(self, name: str, *, max_bytes: int) -> bytes:
        info = self.stat(name)
        if info is None:
            raise FileNotFoundError(name)
        if info.size > max_bytes:
            raise ValueError(f"object {name!r} is {info.size} bytes, over the {max_bytes}-byte limit")
        return self._bucket.blob(name).download_as_bytes()

    def write_bytes(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> BlobInfo:
        blob = self._bucket.blob(safe_relative_path(name))
        blob.upload_from_string(data, content_type=content_type)
        return BlobInfo(name=name, size=len(data), generation=str(blob.generation))

    def stat(self, name: str) -> BlobInfo | None:
        blob = self._bucket.get_blob(safe_relative_path(name))
        if blob is None:
            return None
        return BlobInfo(name=name, size=int(blob.size or 0), generation=str(blob.generation))

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket}/{name}"

    # ---- what a training job needs beyond the port -------------------------------------------

    def download_to(self, name: str, dest: Path) -> None:
        """Stream an object to a local file; FileNotFoundError when absent."""
        from google.api_core.exceptions import NotFound

        try:
            self._bucket.blob(name).download_to_filename(str(dest))
        except NotFound:
            raise FileNotFoundError(self.uri(name)) from None

    def upload_file(self, name: str, path: Path) -> None:
        self._bucket.blob(name).upload_from_filename(str(path))

    def list_folder(self, prefix: str) -> list[str]:
        """Names of the objects directly inside `prefix` (a folder), relative to it."""
        prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        blobs = self._bucket.client.list_blobs(self.bucket, prefix=prefix, delimiter="/")
        return sorted(b.name[len(prefix) :] for b in blobs)

    def delete(self, name: str) -> None:
        """Remove an object; absent is fine."""
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self._bucket.blob(name).delete()


@functools.cache
def shared_client() -> Any:
    """One storage client per process, for callers that reach many buckets (a training job)."""
    from google.cloud import storage

    return storage.Client()


def store_for(bucket: str) -> GcsBlobStore:
    return GcsBlobStore(bucket, client=shared_client())
