"""The dataset-listener's check of a drop (dataset_listener.handlers.verify), without a ledger: a bucket folder,
the bundled pipeline specs and the object-finalized events the bucket sends."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from ctflow.blobstore.local import LocalFolderBlobStore
from ctflow.dataset_drop import drop_folder
from ctflow.embedded.watcher import finalized_event
from ctflow.handling import Outcome, Rejected
from ctflow.pipelines import PipelineCatalog
from dataset_listener.handlers import VerifiedDrop, verify

MARKER = "datasets/digits/v1/_MANIFEST.json"


@pytest.fixture
def bucket(tmp_path, pipelines_dir, digits_folder):  # type: ignore[no-untyped-def]
    catalog, blobs = PipelineCatalog(pipelines_dir), LocalFolderBlobStore(tmp_path / "bucket")
    drop_folder(digits_folder, catalog.get("digits"), blobs, "v1")
    return catalog, blobs


def _event(blobs: LocalFolderBlobStore, name: str = MARKER):  # type: ignore[no-untyped-def]
    return finalized_event(blobs.bucket, name, (blobs.root / name).stat())


def test_a_complete_drop_is_verified_with_its_manifest(bucket):
    catalog, blobs = bucket
    drop = verify(catalog, blobs, _event(blobs))
    assert isinstance(drop, VerifiedDrop) and drop.version == "v1" and drop.spec.name == "digits"
    assert [f.path for f in drop.manifest.files] == ["train.npz"]


def test_a_file_that_is_not_the_marker_does_nothing(bucket):
    catalog, blobs = bucket
    outcome = verify(catalog, blobs, _event(blobs, "datasets/digits/v1/train.npz"))
    assert isinstance(outcome, Outcome) and outcome.status == "ignored"


def test_a_changed_file_a_foreign_bucket_and_an_unknown_prefix_are_refused_with_reasons(bucket):
    catalog, blobs = bucket
    event = _event(blobs)
    with pytest.raises(Rejected, match="from 'local-bucket' only"):
        verify(catalog, blobs, replace(event, data={**event.data, "bucket": "elsewhere"}))
    with pytest.raises(Rejected, match="no pipeline's dataset prefix"):
        verify(catalog, blobs, replace(event, data={**event.data, "name": "other/v1/_MANIFEST.json"}))
    data = blobs.root / "datasets/digits/v1/train.npz"
    data.write_bytes(data.read_bytes()[:-1] + b"!")
    with pytest.raises(Rejected, match="sha256"):
        verify(catalog, blobs, _event(blobs))


def test_a_manifest_larger_than_the_pipeline_allows_is_refused(bucket):
    catalog, blobs = bucket
    marker = blobs.root / MARKER
    doc = json.loads(marker.read_bytes())
    doc["files"] = doc["files"] * 2000  # more files than any pipeline takes
    marker.write_text(json.dumps(doc))
    with pytest.raises(Rejected, match="files"):
        verify(catalog, blobs, _event(blobs))
