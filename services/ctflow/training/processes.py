"""The trainer processes of the local backend, as Linux shows them (/proc) and as children of this one.

A pid alone can be reused by an unrelated process, so a job is identified by its pid AND
the kernel's start time of that pid; its exit status is known only to its parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

# Popen objects of the jobs this process started, by pid. Process-wide, because being a
# child is: a Popen dropped while running would be reaped by subprocess' own clean-up,
# and its exit status lost.
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


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


def child_exit(pid: int) -> tuple[bool, int | None]:
    """(is it a child of this process, its exit code once it has ended and been reaped; negative: the signal).

    For a child, only the wait tells: /proc shows a killed multi-threaded process as a
    zombie while its threads are still exiting, and waiting reaps it once they have.
    """
    child = CHILDREN.get(pid)
    if child is not None:
        return True, child.poll()
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False, None
    return True, os.waitstatus_to_exitcode(status) if done else None


def labelled_process(job_id: str) -> int | None:
    """A live process whose environment carries this job id (the process's run label)."""
    needle = f"\0CTFLOW_JOB_ID={job_id}\0".encode()
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
