"""write_atomically: readers polling a file never see it empty or half written."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ctflow.atomic import write_atomically


def test_a_reader_polling_the_file_only_ever_sees_a_whole_version(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    versions = [bytes([65 + i]) * 200_000 for i in range(4)]
    write_atomically(path, versions[0])
    stop = threading.Event()
    seen: list[bytes] = []

    def read_until_stopped() -> None:
        while not stop.is_set():
            seen.append(path.read_bytes())

    reader = threading.Thread(target=read_until_stopped)
    reader.start()
    try:
        for i in range(200):
            write_atomically(path, versions[i % len(versions)])
    finally:
        stop.set()
        reader.join()
    assert seen and all(data in versions for data in seen)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    write_atomically(path, b"old")

    with pytest.raises(TypeError):
        write_atomically(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.bin"
    write_atomically(path, b"x")
    assert path.read_bytes() == b"x"
