"""Commit markers: bounded, confined to their folder, verified file by file."""

from __future__ import annotations

import io
import json

import pytest

from ctflow.manifest import ManifestError, build_manifest, parse_manifest, safe_relative_path, verify_files

SHA = "0" * 64


def _manifest(*files: dict) -> bytes:
    return json.dumps({"files": list(files)}).encode()


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "a\\b", "a//b", "./a", "a/.", "", "a\nb"])
def test_paths_that_leave_the_folder_are_refused(path):
    """Absolute, parent, empty, dot and backslash paths never pass."""
    with pytest.raises(ManifestError):
        safe_relative_path(path)


def test_nested_relative_paths_are_fine():
    """Sub-folders inside the version are allowed."""
    assert safe_relative_path("shards/part-0001.npz") == "shards/part-0001.npz"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{", "not valid JSON"),
        (b'{"files": [], "note": NaN}', "NaN is not a JSON value"),
        (b"[]", '"files" list'),
        (_manifest(), "lists no files"),
        (_manifest({"path": "a", "sha256": "XYZ", "size": 1}), "64 lowercase hex"),
        (_manifest({"path": "a", "sha256": SHA, "size": -1}), "non-negative"),
        (_manifest({"path": "a", "sha256": SHA, "size": 1}, {"path": "a", "sha256": SHA, "size": 1}), "listed twice"),
        (_manifest({"path": "_MANIFEST.json", "sha256": SHA, "size": 1}), "marker itself"),
    ],
)
def test_invalid_manifests_are_explained(raw, fragment):
    """Each defect is named."""
    with pytest.raises(ManifestError, match=fragment):
        parse_manifest(raw)


def test_size_and_count_are_bounded():
    """Manifests over the byte or file-count limit are refused before they are walked."""
    with pytest.raises(ManifestError, match="over the 10-byte limit"):
        parse_manifest(_manifest({"path": "a", "sha256": SHA, "size": 1}), max_bytes=10)
    many = _manifest(*({"path": f"f{i}", "sha256": SHA, "size": 1} for i in range(3)))
    with pytest.raises(ManifestError, match="over the limit of 2"):
        parse_manifest(many, max_files=2)


def test_build_then_verify_and_detect_tampering(tmp_path):
    """A built marker verifies; a changed byte or a missing file is reported with the file's name."""
    (tmp_path / "a.bin").write_bytes(b"hello")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"world!")
    (tmp_path / ".hidden").write_bytes(b"ignored")
    manifest = parse_manifest(build_manifest(tmp_path))
    assert [f.path for f in manifest.files] == ["a.bin", "sub/b.bin"] and manifest.total_bytes == 11
    verify_files(manifest, lambda p: (tmp_path / p).open("rb"))
    contents = {"a.bin": b"hellO", "sub/b.bin": b"world!"}
    with pytest.raises(ManifestError, match="'a.bin' has sha256"):
        verify_files(manifest, lambda p: io.BytesIO(contents[p]))
    with pytest.raises(ManifestError, match="'sub/b.bin' is 2 bytes"):
        verify_files(manifest, lambda p: io.BytesIO({"a.bin": b"hello", "sub/b.bin": b"wo"}[p]))
    with pytest.raises(ManifestError, match="missing"):
        verify_files(manifest, lambda p: (tmp_path / "nope" / p).open("rb"))
