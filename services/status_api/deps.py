"""What the status API routes share: the service's Dependencies and ledger reads off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

from fastapi import Depends, HTTPException
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from ctflow.service import dependencies

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ctflow.deps import Dependencies

DepsDep = Annotated["Dependencies", Depends(dependencies)]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character, which no id or name in the ledger holds")
    return value


# An id or name to look up: one with a NUL character is refused (422 with the reason) before the ledger
# is asked, on every database alike (PostgreSQL cannot even compare such text; SQLite would answer 404).
LedgerText = Annotated[str, AfterValidator(_no_nul)]
T = TypeVar("T")


async def read_ledger(deps: Dependencies, read: Callable[[Session], T]) -> T:
    """`read(session)` in a read-only ledger transaction, in a worker thread.

    A value the database cannot even compare (PostgreSQL refuses a NUL character in
    text) is the caller's mistake: 400 with the reason, not a 500.
    """
    from sqlalchemy.exc import DataError

    from ctflow.ledger.db import data_error_reason

    def in_transaction() -> T:
        with deps.ledger.reading() as session:
            return read(session)

    try:
        return await run_in_threadpool(in_transaction)
    except DataError as exc:
        raise HTTPException(400, f"the ledger cannot look this up: {data_error_reason(exc)}") from None


def found(value: T | None, what: str) -> T:
    """`value`, or a 404 naming what is missing."""
    if value is None:
        raise HTTPException(404, f"no {what}")
    return value
