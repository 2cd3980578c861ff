"""Watches the embedded bucket folder and emits the GCS object-finalized CloudEvents Eventarc would.

An object's generation is its modification time in nanoseconds, so rewriting a file
is a new generation. Event ids derive from (name, generation): a rescan after a
restart re-emits old objects under the same ids, which the listener dedupes.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

from ..blobstore.local import generation_of
from ..bus import MessageBus
from ..events import GCS_OBJECT_FINALIZED, Event, now_iso, to_pubsub
from ..topology import STORAGE_TOPIC

log = logging.getLogger(__name__)


def finalized_event(bucket: str, name: str, st: os.stat_result) -> Event:
    generation = generation_of(st)
    stamp = datetime.fromtimestamp(st.st_mtime, UTC).isoformat().replace("+00:00", "Z")
    return Event(
        type=GCS_OBJECT_FINALIZED,
        source=f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        id=hashlib.sha256(f"{name}#{generation}".encode()).hexdigest()[:24],
        subject=f"objects/{name}",
        time=now_iso(),
        data={
            "kind": "storage#object",
            "bucket": bucket,
            "name": name,
            "generation": generation,
            "metageneration": "1",
            "size": str(st.st_size),
            "contentType": mimetypes.guess_type(name)[0] or "application/octet-stream",
            "timeCreated": stamp,
            "updated": stamp,
        },
    )


class BucketWatcher:
    def __init__(self, root: Path, bucket: str, bus: MessageBus, interval: float) -> None:
        self.root, self.bucket, self.bus, self.interval = root, bucket, bus, interval
        self._seen: dict[str, str] = {}

    def scan(self) -> int:
        """Emit one event per new or rewritten object; hidden and temporary files are skipped."""
        emitted = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.startswith("."):
                    continue
                path = Path(dirpath) / filename
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(st.st_mode):  # a link, a FIFO, a device: never an object (regular_files)
                    continue
                name = path.relative_to(self.root).as_posix()
                generation = generation_of(st)
                if self._seen.get(name) == generation:
                    continue
                data, attributes = to_pubsub(finalized_event(self.bucket, name, st))
                self.bus.publish(STORAGE_TOPIC, data, attributes)
                self._seen[name] = generation
                emitted += 1
        return emitted

    def run(self, stop: threading.Event) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        while not stop.is_set():
            try:
                self.scan()
            except Exception:  # noqa: BLE001 - keep watching
                log.exception("bucket scan failed")
            stop.wait(self.interval)
