"""Request-scoped dependencies for the status API routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from ctflow.deps import Dependencies


def get_deps(request: Request) -> Dependencies:
    return request.app.state.deps


def get_session(deps: Annotated[Dependencies, Depends(get_deps)]) -> Iterator[Session]:
    with deps.ledger.transaction() as session:
        yield session


DepsDep = Annotated[Dependencies, Depends(get_deps)]
SessionDep = Annotated[Session, Depends(get_session)]
