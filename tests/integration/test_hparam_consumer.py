"""hparam-consumer: both delivery forms, sweeps, schema bounds, dedup per messageId, dead letters."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from ctflow.dataset_drop import drop_folder
from ctflow.events import PUBSUB_MESSAGE_PUBLISHED, Event, to_http_binary
from ctflow.ledger import dead_letters
from ctflow.ledger.tables import DeadLetter, OutboxMessage, Run
from tests.support import gcs_event_request, push_request, replaying, serving

SWEEP = {
    "pipeline": "digits",
    "hyperparameters": {"epochs": 3},
    "sweep": {"lr": [0.1, 0.01, 0.001]},
    "reason": "tune the learning rate",
}


@pytest.fixture
def arrived(deps, listener, digits_folder):  # type: ignore[no-untyped-def]
    """A dataset version of digits has arrived (hyperparameter runs train on the latest one)."""
    drop_folder(digits_folder, deps.pipelines.get("digits"), deps.blobs, "v1")
    headers, body = gcs_event_request(deps.settings.bucket_dir, "datasets/digits/v1/_MANIFEST.json")
    assert listener.post("/", content=body, headers=headers).json()["status"] == "processed"


def _runs(deps):  # type: ignore[no-untyped-def]
    """Runs made by hyperparameter messages (not by the dataset drop)."""
    with deps.ledger.transaction() as tx:
        return [r for r in tx.scalars(select(Run).order_by(Run.id)) if r.trigger["kind"] != "dataset"]


def _eventarc_request(message: dict, message_id: str) -> tuple[dict[str, str], bytes]:
    headers, body = push_request(message, message_id)
    envelope = json.loads(body)
    event = Event(
        type=PUBSUB_MESSAGE_PUBLISHED,
        source="//pubsub.googleapis.com/projects/p/topics/ctflow-hparams",
        id=message_id,
        data=envelope,
    )
    return to_http_binary(event)


@pytest.mark.parametrize("form", ["push", "eventarc"])
def test_sweep_of_three_points_makes_three_requested_runs(deps, consumer, arrived, form):
    """A 3-point sweep, as a push envelope or an Eventarc CloudEvent, yields three training requests."""
    headers, body = (push_request if form == "push" else _eventarc_request)(SWEEP, "m-1")
    answer = consumer.post("/", content=body, headers=headers).json()
    assert answer["status"] == "processed" and len(answer["run_ids"]) == 3
    runs = _runs(deps)
    assert sorted(r.hyperparameters["lr"] for r in runs) == [0.001, 0.01, 0.1]
    assert all(r.state == "requested" and r.hyperparameters["epochs"] == 3 for r in runs)
    assert all(r.hyperparameters["model"] == "mlp" for r in runs)  # spec defaults fill the rest
    assert all(r.dataset_version == "v1" and r.trigger["reason"] == "tune the learning rate" for r in runs)
    with deps.ledger.transaction() as tx:
        types = [m.event_type for m in tx.scalars(select(OutboxMessage))]
    assert types.count("ctflow.training.requested.v1") == 3


def test_same_message_id_three_times_concurrently_gives_one_set_of_runs(deps, arrived):
    """Redeliveries of one messageId, even concurrent and via both forms, have one effect."""
    from hparam_consumer.app import create_app

    app = create_app()
    app.state.deps = deps
    message = {"pipeline": "digits", "hyperparameters": {"lr": 0.02}}
    requests = [push_request(message, "m-dup")] * 2 + [_eventarc_request(message, "m-dup")]
    with serving(app) as url, ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda r: httpx.post(url, headers=r[0], content=r[1], timeout=30), requests))
    assert sorted(a.json()["status"] for a in answers) == ["duplicate", "duplicate", "processed"]
    assert len(_runs(deps)) == 1


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"pipeline": "digits", "hyperparameters": {"lr": 5}}, "lr: 5 is greater than the maximum of 1"),
        ({"pipeline": "digits", "sweep": {"epochs": [1, 500]}}, "sweep point 1 {'epochs': 500}"),
        ({"pipeline": "digits", "hyperparameters": {"optimizer": "sgd"}}, "'optimizer' was unexpected"),
        ({"pipeline": "nope", "hyperparameters": {}}, "unknown pipeline 'nope' (known pipelines: digits)"),
        ({"pipeline": "digits", "sweep": {"lr": [0.1] * 17}}, "sweep has 17 points, over the cap of 16"),
        ({"hyperparameters": {}}, "pipeline: Field required"),
        ({"pipeline": "digits", "dataset_version": "v9"}, "dataset version 'v9' of pipeline digits has arrived"),
        # Python writes and reads NaN; PostgreSQL would refuse to store it on every redelivery.
        ({"pipeline": "digits", "hyperparameters": {"dropout": float("nan")}}, "NaN is not a JSON value"),
    ],
)
def test_invalid_messages_become_dead_letters_with_reasons(deps, consumer, arrived, message, expected):
    """Bad hyperparameter messages get 2xx, no run, and a dead letter whose reason names the problem."""
    headers, body = push_request(message, "m-bad")
    response = consumer.post("/", content=body, headers=headers)
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "rejected" and expected in answer["detail"], answer["detail"]
    assert _runs(deps) == []
    with deps.ledger.transaction() as tx:
        letter = tx.get(DeadLetter, answer["dead_letter_id"])
        assert letter.consumer == "hparam-consumer"
        assert json.loads(letter.request["body"])["message"]["messageId"] == "m-bad"


def test_a_bad_message_arriving_by_push_and_by_eventarc_is_one_dead_letter(deps, consumer, arrived):
    """The intake claims the messageId before validating, so the second route is a duplicate."""
    message = {"pipeline": "digits", "hyperparameters": {"lr": 5}}
    answers = [
        consumer.post("/", content=body, headers=headers).json()
        for headers, body in (push_request(message, "m-twice"), _eventarc_request(message, "m-twice"))
    ]
    assert [a["status"] for a in answers] == ["rejected", "duplicate"]
    assert "m-twice" in answers[1]["detail"]
    with deps.ledger.transaction() as tx:
        assert tx.scalar(select(func.count()).select_from(DeadLetter)) == 1


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"content-type": "application/json"}, b'{"message": {"data": ', "not valid JSON"),
        ({"content-type": "application/json"}, b'{"hello": "world"}', "neither a CloudEvent"),
        (
            {
                "ce-specversion": "1.0",
                "ce-type": "com.example.unknown",
                "ce-source": "//x",
                "ce-id": "1",
                "content-type": "application/json",
            },
            b"{}",
            "does not handle events of type 'com.example.unknown'",
        ),
        ({"content-type": "application/json"}, b"x" * (1024 * 1024 + 1), "over the 1048576-byte limit"),
        ({"content-type": "application/json"}, b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_unknown_and_oversized_requests_are_kept(deps, consumer, headers, body, expected):
    """Never a 5xx: malformed JSON, unknown types and bodies over 1 MiB are dead letters, with the full body
    (an oversized one: its first 64 KiB and its size)."""
    response = consumer.post("/", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    assert expected in response.json()["detail"]
    with deps.ledger.transaction() as tx:
        letter = tx.get(DeadLetter, response.json()["dead_letter_id"])
        kept = min(len(body), dead_letters.OVERSIZED_PREFIX) if len(body) > 1024 * 1024 else len(body)
        assert letter.request["size"] == len(body) and len(letter.request["body"]) == kept
        assert tx.scalar(select(func.count()).select_from(DeadLetter)) == 1


def test_unknown_pipeline_replays_once_the_spec_exists(deps, consumer, listener, arrived, pipelines_dir):
    """Fixing the cause (adding the pipeline and its data) lets the dead letter replay into a run."""
    headers, body = push_request({"pipeline": "digits-wide", "hyperparameters": {"hidden_units": 512}}, "m-new")
    letter_id = consumer.post("/", content=body, headers=headers).json()["dead_letter_id"]
    spec = (pipelines_dir / "digits.yaml").read_text()
    (pipelines_dir / "digits-wide.yaml").write_text(
        spec.replace("name: digits\n", "name: digits-wide\n").replace("datasets/digits/", "datasets/digits-wide/")
    )
    replay_headers = {**headers, "ctflow-replay-of": letter_id}
    with replaying(deps, letter_id):
        still_bad = consumer.post("/", content=body, headers=replay_headers).json()
    assert still_bad["status"] == "rejected" and "no dataset version of pipeline digits-wide" in still_bad["detail"]

    drop_folder(deps.settings.bucket_dir / "datasets/digits/v1", deps.pipelines.get("digits-wide"), deps.blobs, "w1")
    h, b = gcs_event_request(deps.settings.bucket_dir, "datasets/digits-wide/w1/_MANIFEST.json")
    assert listener.post("/", content=b, headers=h).json()["status"] == "processed"
    with replaying(deps, letter_id):
        replayed = consumer.post("/", content=body, headers=replay_headers).json()
    assert replayed["status"] == "processed" and len(replayed["run_ids"]) == 1
    with deps.ledger.transaction() as tx:
        letter = tx.get(DeadLetter, letter_id)
        assert letter.status == "replayed" and letter.replays == 2
    assert consumer.post("/", content=body, headers=headers).json()["status"] == "duplicate"
