"""Request-scoped dependencies for the status API routes (built by the service warm-up)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends

from ctflow.service import dependencies

if TYPE_CHECKING:
    from ctflow.deps import Dependencies

DepsDep = Annotated["Dependencies", Depends(dependencies)]
