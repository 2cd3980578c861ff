"""Contracts: schema files are current, every example is valid, the bundled spec loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from ctflow.contracts import DOCUMENTS, EVENT_PAYLOADS
from ctflow.events import CTFLOW_TYPES
from ctflow.pipelines import load_spec
from ctflow.schema_files import check_schema_files
from ctflow.settings import REPO_ROOT

SCHEMAS = REPO_ROOT / "schemas"


def test_schema_files_match_the_contracts():
    """schemas/ is regenerated from the models (`ctflow schemas --write`) whenever they change."""
    assert check_schema_files(SCHEMAS) == []


def test_every_ctflow_event_type_has_a_schema():
    """Each ctflow event type has one JSON Schema."""
    assert set(EVENT_PAYLOADS) == set(CTFLOW_TYPES)


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_each_schema_has_a_valid_example(name: str):
    """schemas/examples/ holds one sample per schema, valid for the JSON Schema and the model alike."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    example = json.loads((SCHEMAS / "examples" / f"{name}.json").read_text())
    Draft202012Validator.check_schema(schema)
    assert list(Draft202012Validator(schema).iter_errors(example)) == []
    DOCUMENTS[name].model_validate(example)


def test_schemas_reject_what_the_models_reject():
    """A hyperparameter message without a pipeline fails the published JSON Schema too."""
    schema = json.loads((SCHEMAS / "hyperparameter-message.schema.json").read_text())
    assert list(Draft202012Validator(schema).iter_errors({"hyperparameters": {}}))


def test_every_bundled_pipeline_spec_loads():
    """deploy/pipelines/*.yaml validate against the pipeline spec."""
    specs = [load_spec(p) for p in sorted(Path(REPO_ROOT / "deploy/pipelines").glob("*.yaml"))]
    assert [s.name for s in specs] == ["digits"]
    Draft202012Validator.check_schema(specs[0].hyperparameters.schema_)
