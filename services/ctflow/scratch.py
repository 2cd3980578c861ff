"""Scratch folders for work that needs files for a while (a model under evaluation, an archive being built).

They live under the home (`<home>/scratch/<purpose>/`), not in the system's temporary
folder: a process killed mid-work leaves its folder where the next one finds it, and
each new piece of work first removes what is older than any live work could be.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path


@contextmanager
def scratch_dir(home: Path, purpose: str, *, stale_after: timedelta) -> Iterator[Path]:
    """A fresh folder under `<home>/scratch/<purpose>/`, removed afterwards; folders there older than
    `stale_after` (left by a process that died) are removed first."""
    base = home / "scratch" / purpose
    base.mkdir(parents=True, exist_ok=True)
    sweep(base, stale_after)
    with tempfile.TemporaryDirectory(dir=base) as folder:
        yield Path(folder)


def sweep(base: Path, stale_after: timedelta) -> int:
    """Remove the folders in `base` last changed longer than `stale_after` ago; how many."""
    cutoff, removed = time.time() - stale_after.total_seconds(), 0
    for entry in base.iterdir():
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        except FileNotFoundError:
            continue
    return removed
