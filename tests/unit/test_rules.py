"""Small rules: sweep expansion, run state transitions, settings that refuse unsafe values, the catalog."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from ctflow import states
from ctflow.pipelines import PipelineCatalog, PipelineError
from ctflow.settings import REPO_ROOT, Settings
from hparam_consumer.sweeps import SweepTooLarge, expand


def test_sweep_is_the_cartesian_product_in_stable_order():
    """Keys sorted, values in the given order; no sweep means one point."""
    assert expand({"lr": [1, 2], "epochs": [5, 6]}, cap=4) == [
        {"epochs": 5, "lr": 1},
        {"epochs": 5, "lr": 2},
        {"epochs": 6, "lr": 1},
        {"epochs": 6, "lr": 2},
    ]
    assert expand({}, cap=1) == [{}]


def test_sweep_over_the_cap_is_refused_before_expansion():
    """A huge sweep is refused by arithmetic, not by building it."""
    with pytest.raises(SweepTooLarge, match="1000000 points"):
        expand({f"k{i}": list(range(10)) for i in range(6)}, cap=64)


def test_state_machine_fences_late_events():
    """Terminal states accept nothing; skipping ahead is refused."""
    states.check("r", states.REQUESTED, states.TRAINING)
    for target in (states.REGISTERED, states.PROMOTED):
        with pytest.raises(states.InvalidTransition):
            states.check("r", states.REQUESTED, target)
    for terminal in states.TERMINAL:
        with pytest.raises(states.InvalidTransition):
            states.check("r", terminal, states.TRAINING)


def test_embedded_mode_binds_loopback_only():
    """A non-loopback host in embedded mode is refused at start-up."""
    with pytest.raises(ValidationError, match="loopback"):
        Settings(host="0.0.0.0")


def test_gcp_mode_requires_its_resources_and_invokers(monkeypatch):
    """gcp mode without project, bucket, database, OIDC audience or allowed invokers does not start."""
    monkeypatch.delenv("CTFLOW_DATABASE_URL", raising=False)
    with pytest.raises(ValidationError, match="CTFLOW_GCP_PROJECT"):
        Settings(mode="gcp")
    with pytest.raises(ValidationError, match="CTFLOW_OIDC_AUDIENCE"):
        Settings(mode="gcp", gcp_project="p", bucket="b", database_url="postgresql://x/y", host="0.0.0.0")
    with pytest.raises(ValidationError, match="ALLOWED_INVOKERS"):
        Settings(
            mode="gcp",
            gcp_project="p",
            bucket="b",
            database_url="postgresql://x/y",
            host="0.0.0.0",
            oidc_audience="https://svc.run.app",
        )


def test_catalog_reloads_changed_specs_and_reports_bad_ones(tmp_path):
    """Editing a spec takes effect without restart; an invalid spec names its file and field."""
    spec = (REPO_ROOT / "deploy/pipelines/digits.yaml").read_text()
    (tmp_path / "digits.yaml").write_text(spec)
    catalog = PipelineCatalog(tmp_path)
    assert catalog.for_object("datasets/digits/v1/_MANIFEST.json").name == "digits"
    assert catalog.for_object("datasets/other/v1/_MANIFEST.json") is None
    (tmp_path / "digits.yaml").write_text(spec.replace("max_concurrent_runs: 1", "max_concurrent_runs: 2"))
    os.utime(tmp_path / "digits.yaml", ns=(1, 10**18))
    assert catalog.get("digits").training.max_concurrent_runs == 2
    (tmp_path / "broken.yaml").write_text("name: Bad Name\n")
    with pytest.raises(PipelineError, match="broken.yaml: name"):
        catalog.all()


def test_catalog_sees_specs_added_renamed_and_removed(tmp_path):
    """The folder's listing is re-read when a file comes or goes, even if no spec file's own mtime changed."""
    spec = (REPO_ROOT / "deploy/pipelines/digits.yaml").read_text()
    catalog = PipelineCatalog(tmp_path / "pipelines")
    assert catalog.all() == {}  # no folder yet
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "digits.yaml").write_text(spec)
    assert set(catalog.all()) == {"digits"}
    (tmp_path / "pipelines" / "wide.yaml").write_text(spec.replace("name: digits", "name: digits-wide", 1))
    assert set(catalog.all()) == {"digits", "digits-wide"}
    (tmp_path / "pipelines" / "wide.yaml").rename(tmp_path / "pipelines" / "wide.yml")  # not a spec file any more
    assert set(catalog.all()) == {"digits"}
    (tmp_path / "pipelines" / "digits.yaml").unlink()
    assert catalog.all() == {}


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({}, True),
        ({"epochs": 3.0}, True),  # JSON Schema counts 3.0 as an integer
        ({"epochs": True}, False),  # a boolean is not
        ({"lr": 0}, False),  # exclusiveMinimum
        ({"lr": 1}, True),
        ({"model": "cnn"}, True),
        ({"model": "rnn"}, False),
        ({"optimizer": "sgd"}, False),  # additionalProperties: false
        ({"seed": -1}, False),
        ({"batch_size": "64"}, False),
    ],
)
def test_hyperparameter_validator_fast_path_agrees_with_jsonschema(change, valid):
    """jsonschema-rs only answers "valid"; what it accepts, python-jsonschema accepts too."""
    from jsonschema import Draft202012Validator

    from ctflow.pipelines import HyperparameterValidator, load_spec

    spec = load_spec(REPO_ROOT / "deploy/pipelines/digits.yaml")
    values = {**spec.hyperparameters.defaults, **change}
    validator = HyperparameterValidator(spec.hyperparameters.schema_)
    assert validator._fast is not None  # the digits schema compiles in jsonschema-rs
    assert validator._fast.is_valid(values) is valid
    assert Draft202012Validator(spec.hyperparameters.schema_).is_valid(values) is valid
    assert (validator.problems(values) == []) is valid


def test_every_state_constant_is_a_run_state_and_every_run_state_has_a_transition_row():
    """The RunState type, the constants and the transition table name the same states."""
    constants = {value for name, value in vars(states).items() if name.isupper() and isinstance(value, str)}
    assert constants == set(states.ALL)
    assert set(states.TRANSITIONS) <= set(states.ALL)
    assert all(targets <= set(states.ALL) for targets in states.TRANSITIONS.values())
