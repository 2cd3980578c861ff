"""Reading a file of a local bucket only if it really is one: a regular file inside the folder.

A local folder stands in for a GCS bucket (embedded mode), and a GCS object can only be
bytes. A folder can hold more: a FIFO or a device node blocks or never ends (one named as
a dataset file hung every reader), and a symbolic link, of a file or of a folder on the
way to it, reaches outside the bucket (its bytes would be trained on, its size and hash
shown in a dead letter). So a path counts only if no part of it below the root is a
link and the file itself is regular; anything else is refused before a byte is read.
The services' bucket and the trainer's reads both open files here. Standard library only:
the trainer image imports it without the services' dependencies.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


class NotARegularFile(ValueError):
    """The path is not a regular file inside its folder (a link, a FIFO, a device, a folder)."""


def open_regular(root: Path, relative: str) -> BinaryIO:
    """Open `root/relative` for binary reading; FileNotFoundError when absent, NotARegularFile when it is
    not a regular file reached through real folders only (`relative` must already be a safe relative path)."""
    target = _through_real_folders(root, relative)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        if isinstance(exc, IsADirectoryError) or exc.errno == errno.ELOOP:  # ELOOP: the file is a link
            raise NotARegularFile(f"{relative!r} is not a regular file (a link or a folder)") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # a FIFO opened without blocking, a device node
            raise NotARegularFile(f"{relative!r} is not a regular file ({_kind(mode)})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def regular_file_stat(root: Path, relative: str) -> os.stat_result | None:
    """The file's status if it is a regular file reached through real folders only; None otherwise."""
    try:
        st = os.lstat(_through_real_folders(root, relative))
    except (FileNotFoundError, NotARegularFile):
        return None
    return st if stat.S_ISREG(st.st_mode) else None  # S_ISREG is false for a link, whatever it points to


def _through_real_folders(root: Path, relative: str) -> Path:
    """`root/relative`, each folder on the way checked to be one (a link to a folder is refused)."""
    here = root
    for part in Path(relative).parts[:-1]:
        here = here / part
        mode = os.lstat(here).st_mode  # FileNotFoundError when a folder on the way is absent
        if not stat.S_ISDIR(mode):  # S_ISDIR is false for a link, whatever it points to
            raise NotARegularFile(f"{relative!r}: {part!r} is {_kind(mode)}, not a folder")
    return here / Path(relative).name


_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISREG, "a regular file"),
)


def _kind(mode: int) -> str:
    return next((name for is_kind, name in _KINDS if is_kind(mode)), "not a regular file")
