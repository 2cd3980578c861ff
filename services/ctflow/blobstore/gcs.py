"""Google Cloud Storage as the bucket (google-cloud-storage, imported on first use)."""

from __future__ import annotations

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

    def write_bytes(self, name: str, data: bytes) -> BlobInfo:
        blob = self._bucket.blob(safe_relative_path(name))
        blob.upload_from_string(data)
        return BlobInfo(name=name, size=len(data), generation=str(blob.generation))

    def stat(self, name: str) -> BlobInfo | None:
        blob = self._bucket.get_blob(safe_relative_path(name))
        if blob is None:
            return None
        return BlobInfo(name=name, size=int(blob.size or 0), generation=str(blob.generation))

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket}/{name}"
