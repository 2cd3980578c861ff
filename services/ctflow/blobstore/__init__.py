"""The bucket port: where dataset versions, holdout sets and artifacts live.

Adapters: `LocalFolderBlobStore` (embedded: a folder stands in for the bucket) and
`GcsBlobStore` (google-cloud-storage; tested against the GCS emulator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Protocol


def split_gs_uri(uri: str) -> tuple[str, str] | None:
    """(bucket, object name) of a `gs://bucket/name` URI; None for any other URI."""
    if not uri.startswith("gs://"):
        return None
    bucket, _, name = uri[len("gs://") :].partition("/")
    return bucket, name


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int
    generation: str


class BlobStore(Protocol):
    bucket: str

    def open(self, name: str) -> IO[bytes]:
        """Open an object for binary reading; FileNotFoundError when absent."""

    def read_bytes(self, name: str, *, max_bytes: int) -> bytes:
        """Whole object, refusing (ValueError) one larger than max_bytes."""

    def write_bytes(self, name: str, data: bytes) -> BlobInfo: ...

    def stat(self, name: str) -> BlobInfo | None: ...

    def uri(self, name: str) -> str:
        """A URI the trainer can read the object or folder from."""
