"""Replaying a dead letter (status API -> service): one replay of a letter at a time, and a replay marker
that is not the status API's replay of that very event is ignored."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from ctflow.dataset_drop import drop_folder
from ctflow.ledger.tables import DeadLetter, Run
from dataset_listener import app as listener_app
from status_api import app as status_app
from tests.support import gcs_event_request, serving

MARKER = "datasets/digits/v1/_MANIFEST.json"


def _letter(deps, letter_id: str) -> DeadLetter:  # type: ignore[no-untyped-def]
    with deps.ledger.reading() as tx:
        letter = tx.get(DeadLetter, letter_id)
        assert letter is not None
        tx.expunge(letter)
        return letter


def _runs(deps) -> int:  # type: ignore[no-untyped-def]
    with deps.ledger.reading() as tx:
        return len(tx.query(Run).all())


def _bad_drop(deps, digits_folder, url: str) -> tuple[str, bytes]:  # type: ignore[no-untyped-def]
    """A dataset with a corrupted file, dead-lettered by the listener; then the file is repaired."""
    drop_folder(digits_folder, deps.pipelines.get("digits"), deps.blobs, "v1")
    data_file = deps.settings.bucket_dir / "datasets/digits/v1/train.npz"
    good = data_file.read_bytes()
    data_file.write_bytes(good[:-4] + b"oops")
    headers, body = gcs_event_request(deps.settings.bucket_dir, MARKER)
    answer = httpx.post(url, content=body, headers=headers, timeout=30).json()
    assert answer["status"] == "rejected"
    data_file.write_bytes(good)
    return answer["dead_letter_id"], body


def test_concurrent_replays_of_one_letter_make_one_replay(deps, digits_folder):
    """Six replays at once: one goes through, the others are told it is under way or done; the letter's
    reason is the original one (it was overwritten with an IntegrityError) and there is one run."""
    listener = listener_app.create_app()
    listener.state.deps = deps
    api = status_app.create_app()
    api.state.deps = deps
    with serving(listener) as listener_url, serving(api) as api_url:
        deps.settings.service_urls = {"dataset-listener": listener_url}
        letter_id, _ = _bad_drop(deps, digits_folder, listener_url)
        reason = _letter(deps, letter_id).reason
        with ThreadPoolExecutor(6) as pool:
            answers = list(
                pool.map(lambda _: httpx.post(f"{api_url}dead-letters/{letter_id}/replay", timeout=60), range(6))
            )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 409, 409, 409, 409, 409], [a.text for a in answers]
    [done] = [a.json() for a in answers if a.status_code == 200]
    assert done["result"]["status"] == "processed"
    letter = _letter(deps, letter_id)
    assert (letter.status, letter.replays, letter.reason) == ("replayed", 1, reason)
    assert _runs(deps) == 1


def test_a_replay_marker_from_outside_a_replay_is_ignored(deps, listener, digits_folder):
    """The marker names a letter: it counts only for that letter's own event while the status API replays
    it. Another event marked with it, or the same event outside a replay, leaves the letter open."""
    drop_folder(digits_folder, deps.pipelines.get("digits"), deps.blobs, "v1")
    data_file = deps.settings.bucket_dir / "datasets/digits/v1/train.npz"
    good = data_file.read_bytes()
    data_file.write_bytes(good[:-4] + b"oops")
    headers, body = gcs_event_request(deps.settings.bucket_dir, MARKER, event_id="bad")
    letter_id = listener.post("/", content=body, headers=headers).json()["dead_letter_id"]
    data_file.write_bytes(good)

    again = listener.post("/", content=body, headers={**headers, "ctflow-replay-of": letter_id}).json()
    assert again["status"] == "duplicate"  # not a replay the status API is making: an ordinary redelivery
    other_headers, other_body = gcs_event_request(deps.settings.bucket_dir, MARKER, event_id="other")
    other = listener.post("/", content=other_body, headers={**other_headers, "ctflow-replay-of": letter_id})
    assert other.json()["status"] == "processed"  # handled as itself
    letter = _letter(deps, letter_id)
    assert (letter.status, letter.replays) == ("open", 0)


def test_a_bogus_replay_marker_does_not_make_a_handler_prepare_again(deps):
    """The dataset-listener hashes a dataset in its prepare step: a redelivery marked with a letter that is not
    being replayed is a duplicate before that work, as an unmarked one is; a genuine replay prepares afresh."""
    from ctflow.events import Event, to_http_binary
    from ctflow.handling import HandlerContext, Handling, Outcome, Rejected
    from ctflow.intake import Intake
    from tests.support import replaying

    prepared: list[str] = []

    def prepare(deps, event):  # type: ignore[no-untyped-def]
        prepared.append(event.id)
        if len(prepared) == 1:
            raise Rejected("the first look finds it bad")

    def handle(ctx: HandlerContext) -> Outcome:
        return Outcome("processed")

    intake = Intake("test-consumer", {"test.prepared.v1": Handling(handle, prepare=prepare)}, deps)
    headers, body = to_http_binary(Event(type="test.prepared.v1", source="//test", id="e1", data={}))
    letter_id = intake.receive(headers, body).dead_letter_id
    assert letter_id is not None
    assert intake.receive(headers, body, replay_of="not-a-letter").status == "duplicate"
    assert intake.receive(headers, body, replay_of=letter_id).status == "duplicate"  # no replay under way
    assert prepared == ["e1"]
    with replaying(deps, letter_id):
        assert intake.receive(headers, body, replay_of=letter_id).status == "processed"
    assert prepared == ["e1", "e1"]
