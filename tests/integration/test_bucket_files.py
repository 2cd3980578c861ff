"""Only regular files inside the bucket count, for the dataset-listener and the trainer alike: a FIFO, a
device, a link (of a file, of a version folder, of a marker) is refused before a byte is read, and a file
larger than its manifest says is not read to its end."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from ctflow.dataset_drop import drop_folder
from ctflow.manifest import ManifestError, build_manifest
from dataset_listener import app as listener_app
from tests.support import gcs_event_request, serving

VERSION = "datasets/digits/v1"
MARKER = f"{VERSION}/_MANIFEST.json"


@pytest.fixture
def dropped(deps, digits_folder) -> Path:  # type: ignore[no-untyped-def]
    """The digits version dropped in the bucket; returns its folder there."""
    drop_folder(digits_folder, deps.pipelines.get("digits"), deps.blobs, "v1")
    return deps.settings.bucket_dir / VERSION


def _deliver(deps, name: str = MARKER, event_id: str = "e1") -> dict:  # type: ignore[no-untyped-def]
    """The marker's event to a real listener over HTTP, with a timeout: a read that blocks fails the test."""
    app = listener_app.create_app()
    app.state.deps = deps
    with serving(app) as url:
        headers, body = gcs_event_request(deps.settings.bucket_dir, name, event_id=event_id)
        return httpx.post(url, content=body, headers=headers, timeout=20).json()


def test_a_fifo_named_as_a_dataset_file_is_refused_without_blocking(deps, dropped):
    """The FIFO hung the listener's read for ever (and a worker per bus retry); now it is a reasoned letter."""
    (dropped / "train.npz").unlink()
    os.mkfifo(dropped / "train.npz")
    answer = _deliver(deps)
    assert answer["status"] == "rejected" and "train.npz' is not a regular file (a FIFO)" in answer["detail"]


def test_links_out_of_the_bucket_are_refused_and_disclose_nothing(deps, dropped, tmp_path):
    """A linked file (even with the right bytes), a link to an endless device, a linked version folder:
    each refused as a link; the reason states no size or hash of what the link points at."""
    outside = tmp_path / "outside.npz"
    shutil.copy(dropped / "train.npz", outside)
    (dropped / "train.npz").unlink()
    (dropped / "train.npz").symlink_to(outside)
    answer = _deliver(deps, event_id="linked-file")
    assert answer["status"] == "rejected" and "train.npz' is not a regular file" in answer["detail"]
    assert "sha256" not in answer["detail"] and "bytes" not in answer["detail"]

    (dropped / "train.npz").unlink()
    (dropped / "train.npz").symlink_to("/dev/zero")
    assert "not a regular file" in _deliver(deps, event_id="linked-device")["detail"]

    real = tmp_path / "real-version"
    shutil.move(dropped, real)
    shutil.copy(outside, real / "train.npz")
    dropped.symlink_to(real, target_is_directory=True)
    answer = _deliver(deps, event_id="linked-folder")  # a marker reached through a link is no object at all
    assert answer["status"] == "rejected" and "does not exist in bucket local-bucket" in answer["detail"]


def test_a_file_far_larger_than_its_manifest_says_is_not_read_to_its_end(deps, dropped):
    """A 64 GiB sparse file listed as its real size: refused as larger, after reading one byte past it."""
    listed = json.loads((dropped / "_MANIFEST.json").read_bytes())["files"][0]
    with (dropped / listed["path"]).open("r+b") as f:
        f.truncate(64 * 1024**3)
    answer = _deliver(deps)
    assert answer["status"] == "rejected"
    assert f"is more than the {listed['size']} bytes the manifest says" in answer["detail"]


def test_the_trainer_refuses_links_and_fifos_in_its_dataset_version(tmp_path, digits_folder):
    """The trainer reads the bucket's files through the same rule (ctflow.regular_files)."""
    from ctflow_trainer.data import load_verified_dataset

    version = tmp_path / "v1"
    shutil.copytree(digits_folder, version)
    assert load_verified_dataset(str(version)).x.shape[0] > 0
    (version / "train.npz").rename(tmp_path / "elsewhere.npz")
    (version / "train.npz").symlink_to(tmp_path / "elsewhere.npz")
    with pytest.raises(ManifestError, match="not a regular file"):
        load_verified_dataset(str(version))
    (version / "train.npz").unlink()
    os.mkfifo(version / "train.npz")
    with pytest.raises(ManifestError, match="a FIFO"):
        load_verified_dataset(str(version))
    linked = tmp_path / "linked-version"
    linked.symlink_to(digits_folder, target_is_directory=True)
    with pytest.raises(ManifestError, match="symbolic link"):
        load_verified_dataset(str(linked))


def test_the_bucket_watcher_announces_no_link_and_no_fifo(deps, tmp_path):
    """Embedded: a linked or special file in the bucket folder is never an object, so no event is sent."""
    from ctflow.embedded.watcher import BucketWatcher

    root = deps.settings.bucket_dir
    (root / VERSION).mkdir(parents=True)
    (root / VERSION / "real.bin").write_bytes(b"x")
    (root / VERSION / "linked.bin").symlink_to(tmp_path / "anything")
    os.mkfifo(root / VERSION / "fifo.bin")
    (root / VERSION / "_MANIFEST.json").symlink_to(tmp_path / "marker")
    (tmp_path / "marker").write_bytes(build_manifest(tmp_path))

    class Recording:
        def __init__(self) -> None:
            self.names: list[str] = []

        def publish(self, topic: str, data: bytes, attributes: dict) -> str:
            self.names.append(json.loads(data)["name"])
            return "1"

    bus = Recording()
    assert BucketWatcher(root, "local-bucket", bus, 1.0).scan() == 1
    assert bus.names == [f"{VERSION}/real.bin"]
