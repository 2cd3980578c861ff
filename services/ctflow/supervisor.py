"""Child processes the embedded mode runs (trainer jobs, and next TorchServe): start, adopt, reap, stop.

In one place, because being a process's parent is process-wide:

- **start**: in its own session (its pid is its process group, so a stop reaches all it
  started), stdin closed, argv only (nothing reaches a shell). A waiter thread per child
  reaps it the moment it ends and keeps its exit code, so a finished child never stays a
  zombie however long the parent runs and whether or not anyone asks about it.
- **adopt**: a process started by an earlier parent (the stack restarted) is found by
  a label in its environment and identified by its pid AND the kernel's start time of
  that pid (a pid alone can be reused by an unrelated process); its exit code went to
  its new parent, so only whether it is alive can be known.
- **stop**: SIGTERM to the group, then SIGKILL once a grace period has passed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a pid, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[19])


def start_ticks(pid: int) -> int | None:
    stat = proc_stat(pid)
    return stat[1] if stat else None


def is_alive(pid: int, ticks: int | None) -> bool:
    """Whether `pid` is still the process that had start time `ticks`, and not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z" and stat[1] == ticks


def labelled_process(variable: str, value: str) -> int | None:
    """A live process whose environment carries `variable=value` (its label)."""
    needle = f"\0{variable}={value}\0".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in b"\0" + (entry / "environ").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
    return None


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # started in its own session: the pid is the group id


class ProcessSupervisor:
    """The children this process started, each reaped by its own waiter thread as it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._exited: dict[int, int] = {}  # pid -> exit code (negative: the signal), until asked for

    def start(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        stdout: IO[bytes],
        stderr: IO[bytes],
    ) -> int:
        """Start a child in its own session; returns its pid."""
        child = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
        )
        with self._lock:
            self._exited.pop(child.pid, None)  # a reused pid: the earlier child's code is stale
            self._running[child.pid] = child
        threading.Thread(target=self._reap, args=(child,), name=f"reap-{child.pid}", daemon=True).start()
        return child.pid

    def _reap(self, child: subprocess.Popen[bytes]) -> None:
        code = child.wait()
        with self._lock:
            self._running.pop(child.pid, None)
            self._exited[child.pid] = code

    def exit_status(self, pid: int) -> tuple[bool, int | None]:
        """(whether `pid` is a child of this process, its exit code once it has ended; negative: the signal).

        For a child, only the wait tells: /proc shows a killed multi-threaded process as a
        zombie while its threads are still exiting, and the waiter reaps it once they have.
        """
        with self._lock:
            if pid in self._exited:
                return True, self._exited[pid]
            return pid in self._running, None

    def forget(self, pid: int) -> None:
        """The exit code has been recorded elsewhere: drop it."""
        with self._lock:
            self._exited.pop(pid, None)

    def stop(self, pid: int, *, graceful: bool = True) -> None:
        """Ask the child's group to stop (SIGTERM), or make it (SIGKILL)."""
        signal_group(pid, signal.SIGTERM if graceful else signal.SIGKILL)


# Process-wide, as being a parent is: every backend of this process starts its children here.
SUPERVISOR = ProcessSupervisor()
