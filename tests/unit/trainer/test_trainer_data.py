"""Loading a dataset version: manifest checks before anything is trained, then a seeded split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ctflow.manifest import MARKER_NAME, ManifestError, build_manifest
from ctflow.sample_data import npz_bytes
from ctflow_trainer import uris
from ctflow_trainer.data import load_verified_dataset, split


def _version(folder: Path, x: np.ndarray, y: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    (folder / "train.npz").write_bytes(npz_bytes(X=x, y=y))
    (folder / MARKER_NAME).write_bytes(build_manifest(folder))
    return folder


@pytest.fixture
def version(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    return _version(tmp_path / "v1", rng.random((40, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 40))


def test_a_sound_version_loads_by_local_path_and_file_uri(version: Path) -> None:
    """Plain paths and file:// URIs name the same folder."""
    by_path = load_verified_dataset(str(version))
    by_uri = load_verified_dataset(version.as_uri())
    assert by_path.x.shape == (40, 1, 8, 8) and np.array_equal(by_path.y, by_uri.y)
    assert by_path.manifest.sha256 == by_uri.manifest.sha256


def test_a_changed_file_fails_naming_it(version: Path) -> None:
    """Same size, different bytes: the sha256 check names train.npz."""
    data = bytearray((version / "train.npz").read_bytes())
    data[-10] ^= 0xFF
    (version / "train.npz").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="'train.npz' has sha256"):
        load_verified_dataset(str(version))


def test_a_version_without_its_marker_is_incomplete(version: Path) -> None:
    """No _MANIFEST.json yet: the version is not complete and nothing is read."""
    (version / MARKER_NAME).unlink()
    with pytest.raises(ManifestError, match="not complete"):
        load_verified_dataset(str(version))


def test_a_missing_listed_file_is_named(version: Path, tmp_path: Path) -> None:
    """A marker that lists a file the folder lacks fails with that file's name."""
    shutil.copy(version / "train.npz", version / "extra.bin")
    (version / MARKER_NAME).write_bytes(build_manifest(version))
    (version / "extra.bin").unlink()
    with pytest.raises(ManifestError, match="'extra.bin' is listed in the manifest but missing"):
        load_verified_dataset(str(version))


def test_wrong_array_types_are_refused(tmp_path: Path) -> None:
    """Labels must be int64 class indices and images float32 (N, C, H, W)."""
    folder = _version(tmp_path / "bad", np.zeros((4, 8, 8), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ManifestError, match="X must be float32"):
        load_verified_dataset(str(folder))


def test_the_split_depends_only_on_the_seed(version: Path) -> None:
    """Same seed, same 85/15 split; another seed, another split; no row in both halves."""
    dataset = load_verified_dataset(str(version))
    a, b = split(dataset, 42), split(dataset, 42)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(split(dataset, 43)[3], a[3]) or not np.array_equal(split(dataset, 43)[2], a[2])
    assert len(a[0]) == 34 and len(a[2]) == 6
    train_rows = {r.tobytes() for r in a[0]}
    assert not any(r.tobytes() in train_rows for r in a[2])


def test_local_uris_write_atomically_and_list_files(tmp_path: Path) -> None:
    """write_bytes leaves no temporary file; list_names sees only files; delete is idempotent."""
    folder = tmp_path.as_uri() + "/out"
    uris.write_bytes(uris.join(folder, "a.json"), b"{}")
    (tmp_path / "out" / "sub").mkdir()
    assert uris.list_names(folder) == ["a.json"]
    assert uris.read_bytes(uris.join(folder, "a.json")) == b"{}"
    uris.delete(uris.join(folder, "a.json"))
    uris.delete(uris.join(folder, "a.json"))
    assert uris.list_names(folder) == [] and uris.list_names(str(tmp_path / "absent")) == []
    with pytest.raises(FileNotFoundError):
        uris.read_bytes(str(tmp_path / "absent.bin"))
