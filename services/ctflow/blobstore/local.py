"""A local folder as the bucket. Writes are atomic (temp file + rename), like an object upload."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from ..atomic import write_atomically
from ..manifest import safe_relative_path
from ..regular_files import open_regular, regular_file_stat
from . import BlobInfo


class LocalFolderBlobStore:
    def __init__(self, root: Path, bucket: str = "local-bucket") -> None:
        self.root = root
        self.bucket = bucket

    def _path(self, name: str) -> Path:
        return self.root / safe_relative_path(name)

    def open(self, name: str) -> IO[bytes]:
        """Only a regular file reached without links counts as an object (ctflow.regular_files)."""
        return open_regular(self.root, safe_relative_path(name))

    def read_bytes(self, name: str, *, max_bytes: int) -> bytes:
        with self.open(name) as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ValueError(f"object {name!r} is over the {max_bytes}-byte limit")
        return data

    def write_bytes(self, name: str, data: bytes) -> BlobInfo:
        write_atomically(self._path(name), data)
        info = self.stat(name)
        assert info is not None
        return info

    def stat(self, name: str) -> BlobInfo | None:
        st = regular_file_stat(self.root, safe_relative_path(name))
        if st is None:
            return None
        return BlobInfo(name=name, size=st.st_size, generation=generation_of(st))

    def uri(self, name: str) -> str:
        return str(self.root / name) if name else str(self.root)


def generation_of(st: os.stat_result) -> str:
    """Local stand-in for a GCS generation: changes whenever the object is rewritten."""
    return str(st.st_mtime_ns)
