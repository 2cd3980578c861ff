"""The trainer's inputs: hyperparameters and environment variables."""

from __future__ import annotations

import pytest

from ctflow_trainer.config import (
    ConfigError,
    Hyperparameters,
    JobConfig,
    parse_hyperparameters,
    parse_overrides,
)

ENV = {"CTFLOW_RUN_ID": "run-1", "CTFLOW_PIPELINE": "digits", "CTFLOW_DATASET_URI": "/data/v1"}


def test_missing_keys_take_the_pipeline_defaults() -> None:
    """An empty or partial object keeps the digits pipeline's defaults for the other keys."""
    hp = parse_hyperparameters('{"lr": 0.01, "epochs": 5}')
    assert hp == Hyperparameters(lr=0.01, epochs=5)
    assert parse_hyperparameters(None) == Hyperparameters(
        model="mlp",
        lr=0.003,
        epochs=30,
        batch_size=64,
        hidden_units=128,
        dropout=0.1,
        weight_decay=0.0001,
        patience=5,
        seed=42,
    )


def test_command_line_flags_override_the_environment() -> None:
    """Flags (how MLflow Projects passes parameters) win over CTFLOW_HYPERPARAMETERS."""
    overrides = parse_overrides(["--lr", "0.02", "--batch-size", "32", "--model", "cnn"])
    hp = parse_hyperparameters('{"lr": 0.5, "epochs": 3}', overrides)
    assert (hp.lr, hp.batch_size, hp.model, hp.epochs) == (0.02, 32, "cnn", 3)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ('{"learning_rate": 0.1}', "unknown hyperparameters ['learning_rate']"),
        ('{"lr": 0}', "lr=0.0 is out of bounds"),
        ('{"epochs": 2.5}', "epochs must be an integer"),
        ('{"epochs": true}', "epochs must be a int"),
        ('{"dropout": 0.95}', "dropout=0.95 is out of bounds"),
        ('{"model": "resnet"}', "model must be one of ['mlp', 'cnn']"),
        ('{"lr": "fast"}', "lr must be a float"),
        ("[1, 2]", "must be a JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_bad_hyperparameters_are_refused_with_the_reason(raw: str, fragment: str) -> None:
    """Values outside the pipeline schema's bounds fail before any work, naming the problem."""
    with pytest.raises(ConfigError, match=None) as caught:
        parse_hyperparameters(raw)
    assert fragment in str(caught.value)


def test_integral_floats_are_accepted_for_integer_hyperparameters() -> None:
    """JSON producers that write 10.0 for 10 are not punished."""
    assert parse_hyperparameters('{"epochs": 10.0}').epochs == 10


def test_job_config_reads_the_vertex_and_ctflow_variables() -> None:
    """Vertex's CLOUD_ML_JOB_ID stands in for CTFLOW_JOB_ID; experiment defaults to pipeline."""
    cfg = JobConfig.from_env(
        {
            **ENV,
            "CLOUD_ML_JOB_ID": "123",
            "AIP_MODEL_DIR": "gs://b/m/",
            "CTFLOW_TRACEPARENT": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        }
    )
    assert (cfg.job_id, cfg.experiment_name, cfg.model_dir) == ("123", "digits", "gs://b/m/")
    assert JobConfig.from_env({**ENV, "CTFLOW_JOB_ID": "job-7", "CLOUD_ML_JOB_ID": "123"}).job_id == "job-7"


@pytest.mark.parametrize("name", ["CTFLOW_RUN_ID", "CTFLOW_PIPELINE", "CTFLOW_DATASET_URI"])
def test_required_variables_are_named_when_missing(name: str) -> None:
    """A missing required variable fails with its name in the message."""
    env = {k: v for k, v in ENV.items() if k != name}
    with pytest.raises(ConfigError, match=name):
        JobConfig.from_env(env)


def test_unknown_command_line_arguments_are_refused() -> None:
    """Only hyperparameter flags are accepted on the command line."""
    with pytest.raises(ConfigError, match="--data"):
        parse_overrides(["--data", "x"])


def test_the_digits_spec_and_the_trainer_bound_every_hyperparameter_alike():
    """What the hparam-consumer accepts (the spec's schema) is what the trainer accepts: a value the
    spec lets through cannot fail the job later (a seed beyond 32 bits did)."""
    from ctflow.pipelines import load_spec
    from ctflow.settings import REPO_ROOT
    from ctflow_trainer.config import _BOUNDS, MODELS

    schema = load_spec(REPO_ROOT / "deploy" / "pipelines" / "digits.yaml").hyperparameters.schema_["properties"]
    assert set(schema) == {*_BOUNDS, "model"} and schema["model"]["enum"] == list(MODELS)
    for name, (kind, low, high, exclusive) in _BOUNDS.items():
        declared = schema[name]
        assert declared["type"] == ("integer" if kind is int else "number"), name
        assert declared.get("exclusiveMinimum" if exclusive else "minimum") == low, name
        assert declared["maximum"] == high, name
