"""Pipeline specs: one YAML file per model pipeline under deploy/pipelines/.

The catalog re-reads the folder when a file changes, so fixing or adding a spec takes
effect without a restart (and a dead letter for an unknown pipeline can be replayed).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .contracts import PipelineSpec, explain


class PipelineError(ValueError):
    pass


def load_spec(path: Path) -> PipelineSpec:
    import yaml
    from pydantic import ValidationError

    try:
        doc = yaml.safe_load(path.read_text())
        return PipelineSpec.model_validate(doc)
    except (yaml.YAMLError, ValidationError) as exc:
        raise PipelineError(f"{path.name}: {explain(exc)}") from None


class PipelineCatalog:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[str, int], ...] | None = None
        self._specs: dict[str, PipelineSpec] = {}
        self._validators: dict[str, HyperparameterValidator] = {}

    def _current_stamp(self) -> tuple[tuple[str, int], ...]:
        files = sorted(self.folder.glob("*.yaml")) if self.folder.is_dir() else []
        return tuple((p.name, p.stat().st_mtime_ns) for p in files)

    def all(self) -> dict[str, PipelineSpec]:
        stamp = self._current_stamp()
        with self._lock:
            if stamp != self._stamp:
                specs = {}
                for name, _ in stamp:
                    spec = load_spec(self.folder / name)
                    if spec.name in specs:
                        raise PipelineError(f"pipeline {spec.name!r} is defined twice")
                    specs[spec.name] = spec
                self._specs, self._stamp, self._validators = specs, stamp, {}
            return self._specs

    def get(self, name: str) -> PipelineSpec | None:
        return self.all().get(name)

    def validator(self, spec: PipelineSpec) -> HyperparameterValidator:
        """The compiled hyperparameter schema of a pipeline (rebuilt when its file changes)."""
        with self._lock:
            if spec.name not in self._validators:
                self._validators[spec.name] = HyperparameterValidator(spec.hyperparameters.schema_)
            return self._validators[spec.name]

    def for_object(self, object_name: str) -> PipelineSpec | None:
        """The pipeline whose dataset prefix holds this object (longest prefix wins)."""
        matches = [s for s in self.all().values() if object_name.startswith(s.dataset.prefix)]
        return max(matches, key=lambda s: len(s.dataset.prefix), default=None)


class HyperparameterValidator:
    """Validates hyperparameters against a pipeline's JSON Schema (compiled once per schema)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        from jsonschema import Draft202012Validator

        Draft202012Validator.check_schema(schema)
        self._validator = Draft202012Validator(schema)

    def problems(self, values: dict[str, Any]) -> list[str]:
        out = []
        for err in sorted(self._validator.iter_errors(values), key=lambda e: list(e.path)):
            where = ".".join(str(p) for p in err.path)
            out.append(f"{where}: {err.message}" if where else err.message)
        return out
