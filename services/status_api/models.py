"""`GET /models/{pipeline}`: the registered versions, the aliases, and what serves in which environment.

Versions and aliases come from the model registry (MLflow); what serves, from the ledger's
rollouts (the last promoted one per environment, and one under way with its weights), and
the split as the serving backend applies it when this process runs that backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from .deps import DepsDep, LedgerText
from .rollouts import jsonable, observed_traffic
from .views import rollout_summary

if TYPE_CHECKING:
    from ctflow.deps import Dependencies

router = APIRouter(prefix="/models", tags=["models"])
ALIASES = ("champion", "challenger", "previous")


@router.get("/{pipeline}")
async def get_model(pipeline: LedgerText, deps: DepsDep) -> Any:
    """Versions (newest first), aliases, and per environment: the serving version, traffic and any rollout."""
    if deps.pipelines.get(pipeline) is None:
        raise HTTPException(404, f"no pipeline {pipeline!r}")
    return jsonable(await run_in_threadpool(_model_view, deps, pipeline))


def _model_view(deps: Dependencies, pipeline: str) -> dict[str, Any]:
    from ctflow.ledger import rollouts

    registry = deps.registry
    aliases = {alias: (ref.version if (ref := registry.by_alias(pipeline, alias)) else None) for alias in ALIASES}
    versions = [
        {
            "version": ref.version,
            "run_id": ref.run_id and ref.tags.get("ctflow.run_id"),
            "aliases": [alias for alias, version in aliases.items() if version == ref.version],
            "source": ref.source,
        }
        for ref in registry.versions(pipeline)
    ]
    environments: dict[str, Any] = {}
    with deps.ledger.reading() as tx:
        rows = rollouts.listing(tx, pipeline=pipeline, limit=1000)
        for environment in sorted({row.environment for row in rows}):
            serving = rollouts.serving(tx, pipeline, environment)
            active = rollouts.active(tx, pipeline, environment)
            any_row = serving or (active[0] if active else None)
            environments[environment] = {
                "serving_version": serving.candidate_version if serving else None,
                "serving_revision": ((serving.serving or {}).get("revision") or {}).get("name") if serving else None,
                "rollouts_under_way": [rollout_summary(row) for row in active],
                "traffic": observed_traffic(deps, any_row.serving if any_row else None),
            }
    return {"pipeline": pipeline, "aliases": aliases, "versions": versions, "environments": environments}
