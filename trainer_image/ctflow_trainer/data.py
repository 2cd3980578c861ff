"""The dataset version: verified against its manifest, loaded into memory, split by seed.

A dataset version is a folder (local, `file://` or `gs://`) holding `_MANIFEST.json`
and the files it lists; the trainer reads `train.npz` (arrays `X` float32 (N, C, H, W)
in [0, 1] and `y` int64 class indices). Every listed file is checked against its
size and sha256 before training, on the very bytes that are then loaded, so a file
swapped after the check cannot slip in. The train/validation split depends only on
the seed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ctflow.manifest import MARKER_NAME, MAX_MANIFEST_BYTES, Manifest, ManifestError, parse_manifest, verify_files
from ctflow.regular_files import NotARegularFile, open_regular
from ctflow_trainer import uris

TRAIN_FILE = "train.npz"
VALIDATION_FRACTION = 0.15


@dataclass(frozen=True)
class Dataset:
    uri: str
    manifest: Manifest
    x: np.ndarray
    y: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1


def load_verified_dataset(uri: str) -> Dataset:
    """Read the marker, verify every listed file, load `train.npz`; ManifestError if unsound."""
    read = _reader(uri)
    try:
        marker = read(MARKER_NAME, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise ManifestError(f"no {MARKER_NAME} at {uri}: the dataset version is not complete") from None
    manifest = parse_manifest(marker)
    if TRAIN_FILE not in {f.path for f in manifest.files}:
        raise ManifestError(f"the manifest at {uri} does not list {TRAIN_FILE}")
    contents: dict[str, bytes] = {}
    sizes = {f.path: f.size for f in manifest.files}

    def open_file(path: str) -> io.BytesIO:
        contents[path] = read(path, sizes[path])
        return io.BytesIO(contents[path])

    verify_files(manifest, open_file)
    x, y = _arrays(contents[TRAIN_FILE])
    return Dataset(uri=uri, manifest=manifest, x=x, y=y)


def _reader(uri: str) -> Callable[[str, int], bytes]:
    """`read(path, size)`: a file of the dataset version, at most `size + 1` bytes of it (enough to
    prove it longer than its manifest says). A local folder counts only its regular files reached
    without links, as the bucket does (ctflow.regular_files); a GCS object is bytes by nature."""
    if uris.is_gcs(uri):
        return lambda path, size: uris.read_bytes(uris.join(uri, path))
    root = uris.local_path(uri)
    if root.is_symlink():
        raise ManifestError(f"the dataset version folder {uri} is a symbolic link, not a folder of the bucket")

    def read(path: str, size: int) -> bytes:
        try:
            with open_regular(root, path) as stream:
                return stream.read(size + 1)
        except NotARegularFile as exc:
            raise ManifestError(str(exc)) from None

    return read


def _arrays(npz: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(io.BytesIO(npz), allow_pickle=False) as archive:
            x, y = archive["X"], archive["y"]
    except (KeyError, ValueError, OSError) as exc:
        raise ManifestError(f"{TRAIN_FILE} is not an npz with arrays X and y: {exc}") from None
    if x.ndim != 4 or x.dtype != np.float32:
        raise ManifestError(f"{TRAIN_FILE}: X must be float32 (N, C, H, W), got {x.dtype} {x.shape}")
    if y.ndim != 1 or y.dtype != np.int64 or len(y) != len(x) or len(y) < 2:
        raise ManifestError(f"{TRAIN_FILE}: y must be int64 (N,) matching X, got {y.dtype} {y.shape}")
    if y.min() < 0:
        raise ManifestError(f"{TRAIN_FILE}: labels must be class indices >= 0")
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def split(dataset: Dataset, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val): a seeded 85/15 shuffle split of the dataset's rows."""
    order = np.random.default_rng(seed).permutation(len(dataset.y))
    n_val = max(1, int(round(len(order) * VALIDATION_FRACTION)))
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return dataset.x[train], dataset.y[train], dataset.x[val], dataset.y[val]
