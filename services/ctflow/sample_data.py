"""Sample data for the demo: scikit-learn's bundled 8x8 digits as a ctflow dataset.

`write_digits_holdout` writes the pinned evaluation set (a fixed, stratified 20% of
the digits rows chosen by a fixed seed) and `write_digits_dataset` writes every other
row as a dataset version ready for `ctflow drop`: `train.npz` plus its commit marker
`_MANIFEST.json`. The two never share a row. Arrays follow the trainer's dataset
format: `X` float32 (N, 1, 8, 8) scaled to [0, 1] and `y` int64 labels 0..9. The
npz bytes are reproducible (fixed zip timestamps), so the holdout's sha256 can be
pinned. numpy and scikit-learn are imported only when a function runs.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from ctflow.atomic import write_atomically
from ctflow.manifest import MARKER_NAME, build_manifest

if TYPE_CHECKING:
    import numpy as np

    from ctflow.blobstore import BlobStore
    from ctflow.contracts import PipelineSpec

HOLDOUT_SEED = 20_240_601
HOLDOUT_FRACTION = 0.2
TRAIN_FILE = "train.npz"
# np.savez stamps zip entries with the current time; a fixed stamp keeps bytes stable.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 bundled digits as (X float32 (N, 1, 8, 8) in [0, 1], y int64)."""
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    return np.ascontiguousarray(x), np.asarray(bunch.target, dtype=np.int64)


def holdout_mask(y: np.ndarray) -> np.ndarray:
    """Boolean mask of the pinned holdout rows: per class, a seeded 20% (stratified)."""
    import numpy as np

    rng = np.random.default_rng(HOLDOUT_SEED)
    mask = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        take = int(round(len(rows) * HOLDOUT_FRACTION))
        mask[rng.permutation(rows)[:take]] = True
    return mask


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """An .npz archive (readable by np.load) whose bytes depend only on the arrays."""
    import numpy as np

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            with archive.open(info, "w") as entry:
                np.lib.format.write_array(entry, np.ascontiguousarray(arrays[name]), allow_pickle=False)
    return buffer.getvalue()


def digits_holdout_bytes() -> bytes:
    """The pinned holdout set as npz bytes (reproducible: its sha256 is pinned in digits.yaml)."""
    x, y = digits_arrays()
    mask = holdout_mask(y)
    return npz_bytes(X=x[mask], y=y[mask])


def write_digits_holdout(dest_file: Path) -> str:
    """Write the pinned holdout set to `dest_file` and return its sha256."""
    data = digits_holdout_bytes()
    write_atomically(Path(dest_file), data)
    return hashlib.sha256(data).hexdigest()


def write_digits_dataset(dest: Path, *, version: str | None = None) -> Path:
    """Write the digits minus the holdout rows as a dataset version in `dest`; return `dest`.

    `train.npz` lands first and `_MANIFEST.json` last, so a watcher never sees a
    marker before its file. `version`, when given, is recorded in the marker.
    """
    dest = Path(dest)
    x, y = digits_arrays()
    keep = ~holdout_mask(y)
    train_file = dest / TRAIN_FILE
    write_atomically(train_file, npz_bytes(X=x[keep], y=y[keep]))
    extra: dict[str, object] = {"pipeline": "digits"}
    if version is not None:
        extra["version"] = version
    write_atomically(dest / MARKER_NAME, build_manifest(dest, [train_file], **extra))
    return dest


def publish_digits_holdout(spec: PipelineSpec, blobs: BlobStore) -> None:
    """Put the bundled digits holdout at `spec.holdout.uri` in the bucket unless an object is there.

    Embedded mode calls this when it starts, so the completion-handler finds the pinned
    set; an existing object is never replaced (a pinned holdout does not change under
    a pipeline, and the evaluation checks it against the pin).
    """
    if blobs.stat(spec.holdout.uri) is None:
        blobs.write_bytes(spec.holdout.uri, digits_holdout_bytes())


# Pipelines whose pinned holdout ships with ctflow; embedded mode publishes these at start.
BUNDLED_HOLDOUTS = {"digits": publish_digits_holdout}
