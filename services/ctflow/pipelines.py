"""Pipeline specs: one YAML file per model pipeline under deploy/pipelines/.

The catalog re-reads the folder when a file changes, so fixing or adding a spec takes
effect without a restart (and a dead letter for an unknown pipeline can be replayed).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .contracts import PipelineSpec, explain

log = logging.getLogger(__name__)


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


_RACY_NS = 2_000_000_000
Stamp = tuple[tuple[str, int], ...]  # (file name, mtime) of every spec file


class PipelineCatalog:
    """The specs in a folder. Every read checks for changes: one stat of the folder (a file
    added, removed or renamed changes its mtime) and one per spec file (edited in place)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._stamp: Stamp | None = None
        self._listing: tuple[int, list[str]] = (-1, [])  # (folder mtime, spec file names)
        self._specs: dict[str, PipelineSpec] = {}
        self._validators: dict[str, HyperparameterValidator] = {}

    def _current_stamp(self) -> Stamp:
        try:
            folder_mtime = os.stat(self.folder).st_mtime_ns
        except FileNotFoundError:
            return ()
        # A folder changed in the last 2 s is listed every time: on a file system with coarse
        # timestamps, a second change within its resolution would leave the mtime as it was.
        if folder_mtime != self._listing[0] or time.time_ns() - folder_mtime < _RACY_NS:
            self._listing = (folder_mtime, sorted(p.name for p in self.folder.glob("*.yaml")))
        stamp = []
        for name in self._listing[1]:
            try:
                stamp.append((name, os.stat(self.folder / name).st_mtime_ns))
            except FileNotFoundError:  # removed since it was listed: list the folder again next time
                self._listing = (-1, [])
        return tuple(stamp)

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
    """Validates hyperparameters against a pipeline's JSON Schema (Draft 2020-12, compiled once per schema).

    Valid values, the common case, are recognised by jsonschema-rs in microseconds; for
    anything it does not accept, python-jsonschema decides and words every problem, so
    the reasons people read are the same either way.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        from jsonschema import Draft202012Validator

        Draft202012Validator.check_schema(schema)
        self._validator = Draft202012Validator(schema)
        self._fast = _fast_validator(schema)

    def problems(self, values: dict[str, Any]) -> list[str]:
        if self._fast is not None and self._fast.is_valid(values):
            return []
        out = []
        for err in sorted(self._validator.iter_errors(values), key=lambda e: list(e.path)):
            where = ".".join(str(p) for p in err.path)
            out.append(f"{where}: {err.message}" if where else err.message)
        return out


def _fast_validator(schema: dict[str, Any]) -> Any:
    """jsonschema-rs for the same schema, or None where it cannot compile it (python-jsonschema then does all)."""
    import jsonschema_rs

    try:  # formats are annotations in 2020-12, as python-jsonschema treats them without a format checker
        return jsonschema_rs.Draft202012Validator(schema, validate_formats=False)
    except ValueError:  # jsonschema_rs.ValidationError is one
        log.warning("jsonschema-rs cannot compile this hyperparameter schema; validating with jsonschema only")
        return None
