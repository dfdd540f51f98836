"""The envelope is strict, payloads are tolerant, and caused events carry their lineage."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from convohub.contracts import (
    InvalidEventError,
    caused_by,
    decode_event,
    encode_event,
    event_types,
    new_event,
)
from convohub.contracts.catalogue import example_event
from convohub.contracts.events.conversation import ConversationStarted, MessageReceived

STARTED = "convohub.conversation.started.v1"


def example_document(event_type: str = STARTED) -> dict:
    return json.loads(encode_event(example_event(event_type)))


@pytest.mark.parametrize("event_type", event_types())
def test_every_example_event_survives_encode_and_decode(event_type: str) -> None:
    event = example_event(event_type)
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert type(decoded.data).event_type == event_type


def test_envelope_rejects_unknown_attributes() -> None:
    document = example_document() | {"priority": "high"}
    with pytest.raises(InvalidEventError, match="priority"):
        decode_event(json.dumps(document))


@pytest.mark.parametrize("attribute", ["id", "source", "type", "time", "tenantid", "partitionkey"])
def test_envelope_requires_its_attributes(attribute: str) -> None:
    document = example_document()
    del document[attribute]
    with pytest.raises(InvalidEventError):
        decode_event(json.dumps(document))


def test_envelope_requires_a_time_zone_and_cloudevents_1_0() -> None:
    with pytest.raises(InvalidEventError, match="time"):
        decode_event(json.dumps(example_document() | {"time": "2026-11-23T09:00:00"}))
    with pytest.raises(InvalidEventError, match="specversion"):
        decode_event(json.dumps(example_document() | {"specversion": "0.3"}))


def test_payload_ignores_fields_added_later_in_the_same_version() -> None:
    document = example_document()
    document["data"]["sentiment_hint"] = "angry"
    decoded = decode_event(json.dumps(document))
    assert isinstance(decoded.data, ConversationStarted)
    assert not hasattr(decoded.data, "sentiment_hint")


def test_payload_that_does_not_match_its_type_is_rejected_naming_the_field() -> None:
    document = example_document()
    document["data"]["channel"] = "carrier-pigeon"
    with pytest.raises(InvalidEventError, match=r"data\.channel") as caught:
        decode_event(json.dumps(document))
    assert caught.value.event_type is None  # no type hint given: looked up from the document


def test_unknown_event_type_is_rejected() -> None:
    document = example_document() | {"type": "convohub.conversation.teleported.v1"}
    with pytest.raises(InvalidEventError, match="teleported"):
        decode_event(json.dumps(document))
    with pytest.raises(InvalidEventError, match="teleported"):
        decode_event(json.dumps(document), "convohub.conversation.teleported.v1")


def test_new_event_takes_key_subject_and_schema_from_the_payload() -> None:
    payload = ConversationStarted.model_validate(
        {
            "conversation_id": "conv-1",
            "channel": "sms",
            "channel_id": "sms-main",
            "customer": {"channel": "sms", "channel_id": "sms-main", "address": "+15550001111"},
            "started_at": "2026-11-23T09:00:00Z",
        }
    )
    event = new_event(payload, tenant_id="acme", source="/convohub/ingest")
    assert event.partitionkey == "conv-1"
    assert event.subject == "conv-1"
    assert event.type == STARTED
    assert event.dataschema == f"urn:convohub:schema:{STARTED}"
    assert event.correlationid == event.id  # a first event starts its own chain
    assert event.causationid is None
    assert event.time.tzinfo is not None


def test_caused_event_carries_tenant_and_correlation_and_a_derived_id() -> None:
    cause = example_event(STARTED)
    received = MessageReceived.model_validate(
        example_event("convohub.conversation.message_received.v1").data.model_dump()
    )
    first = caused_by(cause, received, source="/convohub/router")
    again = caused_by(cause, received, source="/convohub/router")
    other = caused_by(cause, received, source="/convohub/router", discriminator="agent-7")

    assert first.tenantid == cause.tenantid
    assert first.correlationid == cause.correlationid
    assert first.causationid == cause.id
    assert first.id == again.id, "a re-run must emit the same id"
    assert other.id != first.id
    assert first.id != cause.id


def test_encode_refuses_a_payload_of_another_type() -> None:
    started = example_event(STARTED)
    received = example_event("convohub.conversation.message_received.v1")
    forged = started.model_copy(update={"data": received.data})
    with pytest.raises(InvalidEventError, match="expected ConversationStarted"):
        encode_event(forged)


def test_explicit_time_is_kept() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = new_event(example_event(STARTED).data, tenant_id="t", source="/s", time=when)
    assert decode_event(encode_event(event)).time == when
