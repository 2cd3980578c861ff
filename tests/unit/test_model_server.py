"""The model server's start-up (archive verification, TorchServe's config) and its handler's input checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from model_server.handler import BadRequest, InputSpec, parse
from model_server.serve import RefusedArchive, prepare

SPEC = InputSpec((1, 2, 2), "float32", 0.0, 1.0)


def test_an_archive_whose_bytes_differ_from_the_recorded_sha256_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "model.mar"
    archive.write_bytes(b"the archive")
    env = {"CTFLOW_ARCHIVE": str(archive), "CTFLOW_SERVE_DIR": str(tmp_path / "work"), "PORT": "8080"}
    with pytest.raises(RefusedArchive, match="not the recorded"):
        prepare({**env, "CTFLOW_ARCHIVE_SHA256": "0" * 64})
    with pytest.raises(RefusedArchive, match="no model archive"):
        prepare({**env, "CTFLOW_ARCHIVE": str(tmp_path / "missing.mar"), "CTFLOW_ARCHIVE_SHA256": "0" * 64})


def test_only_the_inference_api_listens_off_loopback_and_nothing_can_be_registered(tmp_path: Path) -> None:
    archive = tmp_path / "model.mar"
    archive.write_bytes(b"the archive")
    sha = hashlib.sha256(b"the archive").hexdigest()
    argv, env = prepare(
        {
            "CTFLOW_ARCHIVE": str(archive),
            "CTFLOW_ARCHIVE_SHA256": sha,
            "CTFLOW_SERVE_DIR": str(tmp_path / "work"),
            "CTFLOW_MODEL_NAME": "digits",
            "PORT": "8123",
            "PATH": "",
        }
    )
    assert argv[1:3] == ["--foreground", "--ncs"] and "--disable-token-auth" in argv
    config = dict(
        line.split("=", 1) for line in (tmp_path / "work" / "config.properties").read_text().splitlines() if line
    )
    assert config["inference_address"] == "http://0.0.0.0:8123"
    for key in ("management_address", "metrics_address"):
        assert config[key].startswith("http://127.0.0.1:")
    assert config["enable_model_api"] == "false" and config["allowed_urls"] == "^$"
    assert config["install_py_dep_per_model"] == "false" and config["default_workers_per_model"] == "1"
    assert config["load_models"] == "digits=model.mar"
    assert (tmp_path / "work" / "model-store" / "model.mar").read_bytes() == b"the archive"
    assert len(env["TMPDIR"]) < 40  # the workers' Unix sockets live there: a socket path must stay short


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (b'{"rows": []}', '{"instances": [...]}'),
        (b'{"instances": []}', "empty"),
        (b'{"instances": [[[0, 0], [0, 0]]]}', "instance 0: expected shape [1, 2, 2]"),
        (b'{"instances": [[[[0, 0], [0, 0]]], [[[0, 0], [0]]]]}', "instance 1: expected shape"),
        (b'{"instances": [[[[0, "a"], [0, 0]]]]}', "'a' is not a number"),
        (b'{"instances": [[[[0, true], [0, 0]]]]}', "True is not a number"),
        (b'{"instances": [[[[0, NaN], [0, 0]]]]}', "not a finite number"),
        (b'{"instances": [[[[0, 2], [0, 0]]]]}', "outside the input range [0.0, 1.0]"),
    ],
)
def test_each_bad_request_is_named_with_its_instance_and_problem(body: bytes, problem: str) -> None:
    with pytest.raises(BadRequest, match=None) as refused:
        parse(body, SPEC)
    assert problem in str(refused.value)


def test_a_valid_request_is_one_batch_of_the_declared_shape_and_dtype() -> None:
    batch = parse(b'{"instances": [[[[0, 0.5], [1, 0]]], [[[0, 0], [0, 0]]]]}', SPEC)
    assert tuple(batch.shape) == (2, 1, 2, 2) and str(batch.dtype) == "torch.float32"
    assert parse({"instances": [SPEC.example()]}, SPEC).shape[0] == 1
    integers = InputSpec((3,), "int64", 0, None)
    with pytest.raises(BadRequest, match="not an integer"):
        parse({"instances": [[1, 2, 2.5]]}, integers)
    assert parse({"instances": [[1, 2, 3]]}, integers).tolist() == [[1, 2, 3]]


def test_a_regression_model_answers_one_number_per_instance_and_names_its_version(tmp_path: Path) -> None:
    import json

    import torch

    from model_server.handler import Model

    class Doubling(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(dim=1, keepdim=True) * 2

    torch.jit.script(Doubling()).save(str(tmp_path / "model.pt"))
    config = {"task": "regression", "input": {"shape": [3], "dtype": "float32", "range": [None, None]}}
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    (tmp_path / "serving.json").write_text(json.dumps({"pipeline": "diabetes", "model_version": "7"}))
    model = Model(tmp_path)
    answer = model.answer({"instances": [[1, 2, 3], [-1, 0, 0.5]]})
    assert answer == {"predictions": [12.0, -1.0], "model_version": "7"}
    with pytest.raises(BadRequest, match="instance 0: expected shape \\[3\\]"):
        model.answer({"instances": [[1, 2]]})
