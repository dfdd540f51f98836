"""The v1 catalogue: every event the issue lists exists, is documented, and has an example."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from convohub.contracts import TOPICS, event_types, event_types_on, payload_class
from convohub.contracts.catalogue import (
    check_topic_registry,
    envelope_class,
    example_event,
    payload_examples,
)
from convohub.contracts.personal import personal_data_paths
from convohub.contracts.schemas import event_schema

REQUIRED_EVENT_TYPES = {
    # conversation and voice
    "convohub.conversation.started.v1",
    "convohub.conversation.message_received.v1",
    "convohub.conversation.message_sent.v1",
    "convohub.conversation.message_delivered.v1",
    "convohub.conversation.message_failed.v1",
    "convohub.conversation.channel_switched.v1",
    "convohub.conversation.human_requested.v1",
    "convohub.conversation.priority_changed.v1",
    "convohub.conversation.tags_changed.v1",
    "convohub.conversation.note_added.v1",
    "convohub.conversation.resolved.v1",
    "convohub.conversation.reopened.v1",
    "convohub.conversation.closed.v1",
    "convohub.conversation.call_started.v1",
    "convohub.conversation.call_answered.v1",
    "convohub.conversation.call_ended.v1",
    # agent
    "convohub.agent.registered.v1",
    "convohub.agent.profile_changed.v1",
    "convohub.agent.presence_changed.v1",
    # routing
    "convohub.routing.classified.v1",
    "convohub.routing.queued.v1",
    "convohub.routing.offered.v1",
    "convohub.routing.offer_accepted.v1",
    "convohub.routing.offer_declined.v1",
    "convohub.routing.offer_expired.v1",
    "convohub.routing.assigned.v1",
    "convohub.routing.transferred.v1",
    "convohub.routing.escalated.v1",
    # sla
    "convohub.sla.clock_started.v1",
    "convohub.sla.clock_paused.v1",
    "convohub.sla.clock_resumed.v1",
    "convohub.sla.warning.v1",
    "convohub.sla.breached.v1",
    "convohub.sla.met.v1",
    "convohub.sla.escalated.v1",
    "convohub.sla.queue_service_level_measured.v1",
    # customer
    "convohub.customer.identified.v1",
    "convohub.customer.profile_updated.v1",
    "convohub.customer.identities_merged.v1",
    "convohub.customer.merge_undone.v1",
    "convohub.customer.segment_entered.v1",
    "convohub.customer.segment_left.v1",
    "convohub.customer.erasure_requested.v1",
    "convohub.customer.erased.v1",
    # feedback
    "convohub.feedback.survey_sent.v1",
    "convohub.feedback.survey_answered.v1",
    "convohub.feedback.analysed.v1",
    "convohub.feedback.follow_up_requested.v1",
    "convohub.feedback.follow_up_closed.v1",
    "convohub.feedback.conversation_facts.v1",
    # dead letter
    "convohub.dlq.dead_lettered.v1",
}

ALL_TYPES = event_types()


def test_catalogue_holds_every_required_event_type() -> None:
    missing = REQUIRED_EVENT_TYPES - set(ALL_TYPES)
    assert not missing, f"missing event types: {sorted(missing)}"


def test_topic_registry_is_consistent() -> None:
    assert check_topic_registry() == []
    assert len({topic.name for topic in TOPICS}) == len(TOPICS)
    carried = [t for topic in TOPICS for t in event_types_on(topic)]
    assert sorted(carried) == ALL_TYPES, "every event type is on exactly one registered topic"


def test_topic_names_and_keys_follow_the_architecture() -> None:
    keys = {topic.name: topic.key for topic in TOPICS}
    assert keys["convohub.conversation.v1"] == "conversation_id"
    assert keys["convohub.routing.v1"] == "conversation_id"
    assert keys["convohub.sla.v1"] == "conversation_id"
    assert keys["convohub.feedback.v1"] == "conversation_id"
    assert keys["convohub.agent.v1"] == "agent_id"
    assert keys["convohub.customer.v1"] == "customer_id"
    assert "convohub.dlq.v1" in keys
    for name in keys:
        assert name.startswith("convohub.")
        assert name.endswith(".v1")


@pytest.mark.parametrize("event_type", ALL_TYPES)
def test_event_is_documented(event_type: str) -> None:
    cls = payload_class(event_type)
    assert (cls.__doc__ or "").strip(), f"{cls.__name__} needs a docstring"
    undocumented = [
        f"{model.__name__}.{name}"
        for model in _models_within(cls)
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert not undocumented, f"fields without a description: {undocumented}"


@pytest.mark.parametrize("event_type", ALL_TYPES)
def test_event_example_is_valid_for_the_model_and_the_json_schema(event_type: str) -> None:
    examples = payload_examples(event_type)
    assert examples, f"{event_type} needs an example"
    for example in examples:
        payload_class(event_type).model_validate(example)
    envelope = example_event(event_type).model_dump(mode="json")
    Draft202012Validator(event_schema(event_type)).validate(envelope)


@pytest.mark.parametrize("event_type", ALL_TYPES)
def test_envelope_class_fixes_the_type(event_type: str) -> None:
    schema = envelope_class(payload_class(event_type)).model_json_schema()
    assert schema["properties"]["type"]["const"] == event_type


def test_class_names_are_unique_across_the_catalogue() -> None:
    seen: dict[str, type] = {}
    for event_type in ALL_TYPES:
        for model in _models_within(payload_class(event_type)):
            other = seen.setdefault(model.__name__, model)
            assert other is model, f"two classes are named {model.__name__}"


@pytest.mark.parametrize(
    ("event_type", "path"),
    [
        ("convohub.conversation.message_received.v1", "data.content.text"),
        ("convohub.conversation.message_received.v1", "data.customer.address"),
        ("convohub.conversation.note_added.v1", "data.text"),
        ("convohub.agent.registered.v1", "data.display_name"),
        ("convohub.feedback.survey_answered.v1", "data.comment"),
    ],
)
def test_personal_data_is_marked_where_people_write_or_are_named(
    event_type: str, path: str
) -> None:
    assert path in personal_data_paths(event_type)


@pytest.mark.parametrize("event_type", ALL_TYPES)
def test_our_own_ids_are_not_marked_personal(event_type: str) -> None:
    key_path = f"data.{payload_class(event_type).topic.key}"
    assert key_path not in personal_data_paths(event_type)


def _models_within(model: type[BaseModel]) -> list[type[BaseModel]]:
    """The model and every model nested in its fields (through lists, optionals, dicts)."""
    found: list[type[BaseModel]] = []

    def visit(annotation: object) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.append(annotation)
                for field in annotation.model_fields.values():
                    visit(field.annotation)
            return
        for argument in getattr(annotation, "__args__", ()):
            visit(argument)

    visit(model)
    return found
