"""Hyperparameters for a retrain on new data: the champion's, else the pipeline spec's defaults.

The champion's come from its model version's `ctflow.hyperparameters` tag, laid over the
spec's defaults (a hyperparameter added to the spec since then gets its default). If the
result breaks the spec's current schema, the defaults are used and the reason is said.
"""

from __future__ import annotations

from typing import Any

from ctflow.contracts import PipelineSpec
from ctflow.pipelines import PipelineCatalog
from ctflow.registry import ModelRegistry


def retrain_hyperparameters(
    registry: ModelRegistry, pipelines: PipelineCatalog, spec: PipelineSpec
) -> tuple[dict[str, Any], str]:
    """(hyperparameters, where they came from, in words shown on the run)."""
    defaults = dict(spec.hyperparameters.defaults)
    champion = registry.champion(spec.name)
    if champion is None:
        return defaults, "spec defaults (no champion yet)"
    merged = {**defaults, **champion.hyperparameters}
    problems = pipelines.validator(spec).problems(merged)
    if problems:
        return defaults, (
            f"spec defaults (champion v{champion.version}'s hyperparameters break the schema: {'; '.join(problems)})"
        )
    return merged, f"champion v{champion.version}"
