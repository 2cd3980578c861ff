"""The bundled digits sample: a dataset version and a pinned holdout that never overlap."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ctflow.manifest import MARKER_NAME, parse_manifest, verify_files
from ctflow.sample_data import digits_arrays, write_digits_dataset, write_digits_holdout

# The holdout's identity: a change here changes every model comparison ever made on it.
PINNED_HOLDOUT_SHA256 = "cb1f6db33a096671a7f28c4ad94ccdcd4c4ff96b2930369b15fe0df374fb1451"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("digits")
    dataset = write_digits_dataset(root / "v1", version="v1")
    holdout = root / "holdout.npz"
    return dataset, holdout, write_digits_holdout(holdout)


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


def test_holdout_and_training_rows_never_overlap(written: tuple[Path, Path, str]) -> None:
    """Every digits row lands in exactly one of the two sets (compared by pixel content)."""
    dataset, holdout, _ = written
    with np.load(dataset / "train.npz") as train, np.load(holdout) as held:
        train_x, held_x, train_y, held_y = train["X"], held["X"], train["y"], held["y"]
    all_x, _ = digits_arrays()
    assert len({row.tobytes() for row in all_x}) == 1797  # no duplicate images, so content identifies a row
    assert len(train_x) + len(held_x) == len(all_x)
    assert not (_rows(train_x) & _rows(held_x))
    assert _rows(train_x) | _rows(held_x) == _rows(all_x)
    assert 0.19 < len(held_x) / len(all_x) < 0.21
    assert np.array_equal(np.bincount(held_y) > 30, np.ones(10, bool))  # stratified: every class present
    assert train_y.dtype == np.int64 and train_x.dtype == np.float32 and train_x.shape[1:] == (1, 8, 8)
    assert train_x.min() >= 0.0 and train_x.max() <= 1.0


def test_the_dataset_manifest_verifies(written: tuple[Path, Path, str]) -> None:
    """The marker lists train.npz with a matching sha256 and records pipeline and version."""
    dataset, _, _ = written
    manifest = parse_manifest((dataset / MARKER_NAME).read_bytes())
    verify_files(manifest, lambda path: (dataset / path).open("rb"))
    assert [f.path for f in manifest.files] == ["train.npz"]
    assert manifest.extra == {"pipeline": "digits", "version": "v1"}


def test_holdout_bytes_are_identical_run_to_run(tmp_path: Path, written: tuple[Path, Path, str]) -> None:
    """Two writes (at different times) give the same bytes, so the sha256 can be pinned."""
    _, holdout, sha = written
    again = tmp_path / "again.npz"
    assert write_digits_holdout(again) == sha == hashlib.sha256(holdout.read_bytes()).hexdigest()
    assert again.read_bytes() == holdout.read_bytes()
    assert sha == PINNED_HOLDOUT_SHA256


def test_dataset_bytes_are_reproducible_and_version_is_optional(
    tmp_path: Path, written: tuple[Path, Path, str]
) -> None:
    """Rewriting the dataset gives the same train.npz; without a version the marker omits it."""
    dataset, _, _ = written
    other = write_digits_dataset(tmp_path / "other")
    assert (other / "train.npz").read_bytes() == (dataset / "train.npz").read_bytes()
    assert "version" not in json.loads((other / MARKER_NAME).read_bytes())
