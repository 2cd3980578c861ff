"""Dataset commit markers: the `_MANIFEST.json` that completes a dataset version.

A dataset version is a folder of files completed by a marker written last:
`{"files": [{"path": "train.npz", "sha256": "...", "size": 123}], ...}`.
This module parses and bounds a marker, confines every path to its version folder,
builds markers for `ctflow drop`, and verifies files against one. It is shared by
the dataset listener and the trainer (which re-verifies before it trains).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from .strict_json import InvalidJson, parse_json

MARKER_NAME = "_MANIFEST.json"
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_FILES = 10_000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9._=+-][A-Za-z0-9._=+ -]*$")
_CHUNK = 1024 * 1024


class ManifestError(ValueError):
    """The marker or a file it lists is not acceptable; the message says why."""


@dataclass(frozen=True)
class ManifestFile:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    files: tuple[ManifestFile, ...]
    extra: dict
    sha256: str  # digest of the marker bytes: the dataset version's identity

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> list[dict]:
        return [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files]


def safe_relative_path(path: object) -> str:
    """Return `path` if it stays inside its folder, else raise ManifestError.

    Refuses absolute paths, `..`, empty or dot segments, backslashes and control
    characters, so a manifest can never name a file outside its dataset version.
    """
    if not isinstance(path, str) or not path:
        raise ManifestError("a file path is empty or not a string")
    if "\\" in path or any(ord(c) < 32 for c in path):
        raise ManifestError(f"file path {path!r} contains a backslash or control character")
    if path.startswith("/"):
        raise ManifestError(f"file path {path!r} is absolute; paths must be relative to the version folder")
    parts = PurePosixPath(path).parts
    if any(p in ("..", ".") for p in path.split("/")):
        raise ManifestError(f"file path {path!r} leaves its dataset folder ('..' or '.' segment)")
    if not all(_SAFE_SEGMENT.match(p) for p in parts) or len(parts) != len(path.split("/")):
        raise ManifestError(f"file path {path!r} has an empty or unsafe segment")
    return path


def parse_manifest(raw: bytes, *, max_bytes: int = MAX_MANIFEST_BYTES, max_files: int = MAX_FILES) -> Manifest:
    """Parse and bound a marker's bytes; every listed path is confined to the folder."""
    if len(raw) > max_bytes:
        raise ManifestError(f"manifest is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        doc = parse_json(raw, "manifest")
    except InvalidJson as exc:
        raise ManifestError(str(exc)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise ManifestError('manifest must be a JSON object with a "files" list')
    entries = doc["files"]
    if not entries:
        raise ManifestError("manifest lists no files")
    if len(entries) > max_files:
        raise ManifestError(f"manifest lists {len(entries)} files, over the limit of {max_files}")
    files: list[ManifestFile] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ManifestError(f"files[{i}] is not an object")
        path = safe_relative_path(entry.get("path"))
        if path == MARKER_NAME:
            raise ManifestError(f"files[{i}] names the marker itself")
        if path in seen:
            raise ManifestError(f"file {path!r} is listed twice")
        seen.add(path)
        sha = entry.get("sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise ManifestError(f"file {path!r}: sha256 must be 64 lowercase hex digits")
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"file {path!r}: size must be a non-negative integer")
        files.append(ManifestFile(path, sha, size))
    extra = {k: v for k, v in doc.items() if k != "files"}
    return Manifest(tuple(files), extra, hashlib.sha256(raw).hexdigest())


def sha256_stream(stream: IO[bytes], *, limit: int | None = None) -> tuple[str, int]:
    """Digest and byte count of a binary stream, read in bounded chunks; with `limit`, reading stops
    once the stream has proved longer than that (the count is then `limit + 1`)."""
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(_CHUNK if limit is None else min(_CHUNK, limit + 1 - size)):
        digest.update(chunk)
        size += len(chunk)
        if limit is not None and size > limit:
            break
    return digest.hexdigest(), size


def verify_files(manifest: Manifest, open_file: Callable[[str], IO[bytes]]) -> None:
    """Check every listed file's size and sha256; raise ManifestError naming the first mismatch.

    `open_file(path)` opens a listed file for binary reading (local folder or bucket)
    and raises FileNotFoundError when it is absent.
    """
    for f in manifest.files:
        try:
            with open_file(f.path) as stream:
                sha, size = sha256_stream(stream, limit=f.size)  # a far larger file is not read to its end
        except FileNotFoundError:
            raise ManifestError(f"file {f.path!r} is listed in the manifest but missing") from None
        if size > f.size:
            raise ManifestError(f"file {f.path!r} is more than the {f.size} bytes the manifest says")
        if size != f.size:
            raise ManifestError(f"file {f.path!r} is {size} bytes; the manifest says {f.size}")
        if sha != f.sha256:
            raise ManifestError(
                f"file {f.path!r} has sha256 {sha[:12]}…; the manifest says {f.sha256[:12]}… "
                "(the file changed or was not fully uploaded)"
            )


def iter_dataset_files(folder: Path) -> Iterator[Path]:
    """Files of a local dataset folder, marker and hidden files excluded, in stable order."""
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel != MARKER_NAME and not any(s.startswith(".") for s in rel.split("/")):
            yield p


def build_manifest(folder: Path, files: Iterable[Path] | None = None, **extra: object) -> bytes:
    """Marker bytes for a local folder: every file with its sha256 and size."""
    entries = []
    for p in files if files is not None else iter_dataset_files(folder):
        with p.open("rb") as stream:
            sha, size = sha256_stream(stream)
        entries.append({"path": safe_relative_path(p.relative_to(folder).as_posix()), "sha256": sha, "size": size})
    return (json.dumps({"files": entries, **extra}, indent=2, sort_keys=True) + "\n").encode()
