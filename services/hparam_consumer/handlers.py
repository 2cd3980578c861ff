"""Validate a hyperparameter message, expand its sweep, resolve the dataset, request training.

The message arrives as a Pub/Sub push or as Eventarc's `messagePublished`; both reach
here as the same event. Dedup is per messageId, whichever way it came: the intake claims
the messageId before the handler runs, so a bad message that arrives both ways is one
dead letter, not two.
"""

from __future__ import annotations

from pydantic import ValidationError

from ctflow import events
from ctflow.codec import MalformedRequest, parse_json, pubsub_message_data, pubsub_message_id
from ctflow.contracts import HyperparameterMessage, explain
from ctflow.events import Event
from ctflow.handling import HandlerContext, Handling, Outcome, Rejected
from ctflow.ledger import datasets, runs
from ctflow.topology import HPARAM_CONSUMER

from .sweeps import SweepTooLarge, expand

MESSAGE_ID_SOURCE = "pubsub:message-id"


def message_id_key(event: Event) -> tuple[str, str] | None:
    """Dedup per messageId, whether the message came as a push or through Eventarc."""
    try:
        return MESSAGE_ID_SOURCE, pubsub_message_id(event)
    except MalformedRequest:
        return None


def on_message_published(ctx: HandlerContext) -> Outcome:
    try:
        data, attributes, message_id = pubsub_message_data(ctx.event)
        doc = parse_json(data, "hyperparameter message data")
    except MalformedRequest as exc:
        raise Rejected(str(exc)) from None
    try:
        message = HyperparameterMessage.model_validate(doc)
    except ValidationError as exc:
        raise Rejected(f"hyperparameter message is invalid: {explain(exc)}") from None

    spec = ctx.deps.pipelines.get(message.pipeline)
    if spec is None:
        known = ", ".join(sorted(ctx.deps.pipelines.all())) or "none"
        raise Rejected(f"unknown pipeline {message.pipeline!r} (known pipelines: {known})")
    cap = min(spec.training.max_sweep_points, ctx.deps.settings.max_sweep_points)
    try:
        points = expand(message.sweep, cap)
    except SweepTooLarge as exc:
        raise Rejected(f"{exc} for pipeline {spec.name}") from None
    validator = ctx.deps.pipelines.validator(spec)
    requests = []
    for index, point in enumerate(points):
        hyperparameters = {**spec.hyperparameters.defaults, **message.hyperparameters, **point}
        problems = validator.problems(hyperparameters)
        if problems:
            where = f"sweep point {index} {point}" if point else "the hyperparameters"
            raise Rejected(f"{where} break pipeline {spec.name}'s hyperparameter schema: {'; '.join(problems)}")
        requests.append(hyperparameters)

    dataset = datasets.latest(ctx.tx, spec.name, message.dataset_version)
    if dataset is None:
        wanted = f"dataset version {message.dataset_version!r}" if message.dataset_version else "no dataset version"
        raise Rejected(f"{wanted} of pipeline {spec.name} has arrived; drop one first")
    dataset_ref = datasets.as_ref(dataset)
    trigger = {
        "kind": attributes.get("ctflow-trigger", "message"),
        "message_id": message_id,
        "event_id": ctx.event.id,
        "source": ctx.event.source,
        "reason": message.reason,
    }
    for index, hyperparameters in enumerate(requests):
        run_id = runs.run_id_for(spec.name, "hparams", message_id, str(index))
        runs.create(
            ctx.tx,
            run_id=run_id,
            pipeline=spec.name,
            trigger=trigger,
            hyperparameters=hyperparameters,
            service=HPARAM_CONSUMER,
            dataset_version=dataset.version,
            dataset=dataset_ref,
        )
        runs.note_event(ctx.tx, run_id, "received", ctx.event, HPARAM_CONSUMER)
        ctx.touched(run_id)
        ctx.emit(
            events.run_event(
                events.TRAINING_REQUESTED,
                HPARAM_CONSUMER,
                run_id,
                {
                    "run_id": run_id,
                    "pipeline": spec.name,
                    "hyperparameters": hyperparameters,
                    "dataset": dataset_ref,
                    "sweep_point": index if message.sweep else None,
                    "reason": message.reason,
                },
            )
        )
    return Outcome("processed", f"{len(requests)} training request(s) for {spec.name}")


# One message may come by push and through Eventarc: deduplicated on its messageId either way.
MESSAGE_PUBLISHED = Handling(on_message_published, inbox_key=message_id_key)
