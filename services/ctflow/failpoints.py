"""Failpoints: named places where a crash test can make this process die on purpose.

`CTFLOW_FAILPOINTS=after-commit` makes the process SIGKILL itself when it reaches
`hit("after-commit")`; used by the integration tests that prove nothing is lost.
"""

from __future__ import annotations

import os
import signal
from functools import cache


@cache
def _armed() -> frozenset[str]:
    return frozenset(p for p in os.environ.get("CTFLOW_FAILPOINTS", "").split(",") if p)


def hit(name: str) -> None:
    if name in _armed():
        os.kill(os.getpid(), signal.SIGKILL)
