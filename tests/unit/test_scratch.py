"""Scratch folders live under the home and what a dead process left there is removed by the next user."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from ctflow.scratch import scratch_dir


def test_a_scratch_folder_is_under_the_home_and_removed_after_use(tmp_path):
    with scratch_dir(tmp_path, "evaluation", stale_after=timedelta(minutes=10)) as folder:
        assert folder.parent == tmp_path / "scratch" / "evaluation"
        (folder / "model.pt").write_bytes(b"weights")
    assert not folder.exists()


def test_folders_older_than_any_live_work_are_swept_and_newer_ones_kept(tmp_path):
    """A process killed mid-evaluation left `dead`; `live` belongs to work still under way."""
    base = tmp_path / "scratch" / "evaluation"
    (base / "dead").mkdir(parents=True)
    (base / "live").mkdir()
    an_hour_ago = time.time() - 3600
    os.utime(base / "dead", (an_hour_ago, an_hour_ago))
    with scratch_dir(tmp_path, "evaluation", stale_after=timedelta(minutes=10)):
        assert not (base / "dead").exists() and (base / "live").exists()
