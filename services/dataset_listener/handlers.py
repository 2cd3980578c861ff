"""A dataset version is complete when its commit marker lands; files before it do nothing.

The marker must sit directly in `<prefix><version>/`. Its manifest is bounded, every
path is confined to the version folder, and every file's size and sha256 are checked.
That reading and hashing (`verify_drop`) happens before the ledger transaction, which
then only records the version. A second event for the same object generation (any
event id) is a duplicate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ctflow import events
from ctflow.blobstore import BlobStore
from ctflow.contracts import PipelineSpec
from ctflow.deps import Dependencies
from ctflow.events import Event
from ctflow.handling import HandlerContext, Handling, Outcome, Rejected
from ctflow.ledger import datasets, runs
from ctflow.manifest import Manifest, ManifestError, parse_manifest, verify_files
from ctflow.pipelines import PipelineCatalog
from ctflow.topology import DATASET_LISTENER

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class VerifiedDrop:
    """A commit marker whose manifest and every file checked out."""

    spec: PipelineSpec
    obj: dict[str, str]
    version: str
    uri: str
    manifest: Manifest


def verify_drop(deps: Dependencies, event: Event) -> VerifiedDrop | Outcome:
    """Read and check the marker's manifest and files (outside the ledger transaction)."""
    return verify(deps.pipelines, deps.blobs, event)


def verify(pipelines: PipelineCatalog, blobs: BlobStore, event: Event) -> VerifiedDrop | Outcome:
    """`verify_drop` from the ports it reads (unit tests give it a bucket folder and no ledger)."""
    obj = _object(event.data)
    name = obj["name"]
    base = name.rsplit("/", 1)[-1]
    spec = pipelines.for_object(name)
    marker = spec.dataset.commit_marker if spec else "_MANIFEST.json"
    if base != marker:
        return Outcome("ignored", f"{name!r} is not a commit marker; a version completes when its {marker} lands")
    if spec is None:
        prefixes = ", ".join(s.dataset.prefix for s in pipelines.all().values()) or "none"
        raise Rejected(f"no pipeline's dataset prefix holds {name!r} (known prefixes: {prefixes})")
    prefix = spec.dataset.prefix
    parts = name[len(prefix) :].split("/")
    if len(parts) != 2 or not _VERSION.match(parts[0]):
        raise Rejected(
            f"commit marker {name!r} must sit directly in {prefix}<version>/ "
            "with a version of letters, digits, '.', '_' or '-'"
        )
    version, folder = parts[0], f"{prefix}{parts[0]}/"
    if obj["bucket"] != blobs.bucket:
        raise Rejected(f"the event names bucket {obj['bucket']!r}; datasets are read from {blobs.bucket!r} only")
    if (stale := _not_this_generation(blobs, name, obj["generation"])) is not None:
        return stale
    try:
        raw = blobs.read_bytes(name, max_bytes=1024 * 1024)
        manifest = parse_manifest(raw, max_files=spec.dataset.max_files)
        if manifest.total_bytes > spec.dataset.max_bytes:
            raise ManifestError(
                f"dataset is {manifest.total_bytes} bytes, over the pipeline's limit of {spec.dataset.max_bytes}"
            )
        verify_files(manifest, lambda path: blobs.open(folder + path))
    except FileNotFoundError:
        raise Rejected(f"commit marker {name!r} no longer exists in bucket {obj['bucket']}") from None
    except (ManifestError, ValueError) as exc:
        raise Rejected(f"dataset {spec.name}/{version} is invalid: {exc}") from None
    if (rewritten := _not_this_generation(blobs, name, obj["generation"])) is not None:
        return rewritten  # the marker changed while it was read: what was read may be the newer one
    return VerifiedDrop(spec, obj, version, blobs.uri(folder), manifest)


def _not_this_generation(blobs: BlobStore, name: str, generation: str) -> Outcome | None:
    """None when the marker is at the event's generation. An event is trusted for nothing but which
    object to look at: the object's own metadata decide (a stale or made-up generation starts no run)."""
    current = blobs.stat(name)
    if current is None:
        raise Rejected(f"commit marker {name!r} does not exist in bucket {blobs.bucket}")
    if current.generation == generation:
        return None
    return Outcome(
        "ignored",
        f"{name!r} is at generation {current.generation}, not {generation} as the event says: "
        "the event is stale (that generation's own event does the work) or names a generation that never was",
    )


def on_object_finalized(ctx: HandlerContext) -> Outcome:
    drop: VerifiedDrop | Outcome = ctx.prepared
    if isinstance(drop, Outcome):
        return drop
    spec, obj, version, manifest, name = drop.spec, drop.obj, drop.version, drop.manifest, drop.obj["name"]
    run_id = runs.run_id_for(spec.name, "dataset", obj["bucket"], name, obj["generation"])
    recorded = datasets.record(
        ctx.tx,
        pipeline=spec.name,
        version=version,
        bucket=obj["bucket"],
        object_name=name,
        generation=obj["generation"],
        uri=drop.uri,
        manifest_sha256=manifest.sha256,
        files=manifest.to_json(),
        total_bytes=manifest.total_bytes,
        run_id=run_id,
    )
    if recorded is None:
        return Outcome("duplicate", f"generation {obj['generation']} of {name!r} was already recorded")
    dataset = datasets.as_ref(recorded)
    trigger = {"kind": "dataset", "event_id": ctx.event.id, "source": ctx.event.source, "object": name}
    runs.create(
        ctx.tx,
        run_id=run_id,
        pipeline=spec.name,
        trigger=trigger,
        hyperparameters={},
        service=DATASET_LISTENER,
        dataset_version=version,
        dataset=dataset,
    )
    runs.note_event(ctx.tx, run_id, "received", ctx.event, DATASET_LISTENER)
    ctx.touched(run_id)
    ctx.emit(
        events.run_event(
            events.DATASET_ARRIVED,
            DATASET_LISTENER,
            run_id,
            {"run_id": run_id, "pipeline": spec.name, "dataset": dataset},
        )
    )
    return Outcome("processed", f"dataset {spec.name}/{version} arrived")


def _object(data: Any) -> dict[str, str]:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not isinstance(data.get("bucket"), str):
        raise Rejected('object-finalized event data must be an object with string "bucket" and "name"')
    name = data["name"]
    if name.startswith("/") or "\\" in name or any(seg in ("..", ".") for seg in name.split("/")):
        raise Rejected(f"object name {name!r} is absolute or contains '..' or '.' segments")
    generation = data.get("generation")
    if generation in (None, ""):
        raise Rejected(f"object-finalized event for {name!r} has no generation")
    return {"name": name, "bucket": data["bucket"], "generation": str(generation)}


# The bucket is read (every file hashed) before the ledger transaction, never inside it.
OBJECT_FINALIZED = Handling(on_object_finalized, prepare=verify_drop)
