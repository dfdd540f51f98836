"""The Kafka binding: structured JSON value, key, and ce_type / ce_id / traceparent headers."""

from __future__ import annotations

import json

import pytest

from convohub.contracts import InvalidEventError, from_kafka_record, to_kafka_record, tombstone
from convohub.contracts.catalogue import example_event

RECEIVED = "convohub.conversation.message_received.v1"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_record_is_keyed_by_partition_key_on_the_events_topic() -> None:
    event = example_event(RECEIVED)
    record = to_kafka_record(event, traceparent=TRACEPARENT)
    assert record.topic == "convohub.conversation.v1"
    assert record.key == event.partitionkey.encode()
    assert record.header("ce_type") == RECEIVED.encode()
    assert record.header("ce_id") == event.id.encode()
    assert record.header("traceparent") == TRACEPARENT.encode()
    assert record.header("content-type").startswith(b"application/cloudevents+json")
    value = json.loads(record.value)
    assert value["specversion"] == "1.0"
    assert value["data"]["conversation_id"] == event.partitionkey


def test_record_round_trips_with_and_without_headers() -> None:
    event = example_event(RECEIVED)
    record = to_kafka_record(event)
    assert record.header("traceparent") is None
    assert from_kafka_record(record.value, record.headers) == event
    assert from_kafka_record(record.value, dict(record.headers)) == event
    assert from_kafka_record(record.value) == event


def test_header_disagreeing_with_the_envelope_is_rejected() -> None:
    record = to_kafka_record(example_event(RECEIVED))
    with pytest.raises(InvalidEventError, match="ce_id"):
        from_kafka_record(record.value, {"ce_id": b"someone-else"})
    with pytest.raises(InvalidEventError):
        from_kafka_record(record.value, {"ce_type": b"convohub.conversation.started.v1"})


def test_malformed_traceparent_is_refused() -> None:
    with pytest.raises(ValueError, match="traceparent"):
        to_kafka_record(example_event(RECEIVED), traceparent="not-a-trace")


def test_value_that_is_not_json_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEventError):
        from_kafka_record(b"\x00\xffnot json")


def test_a_tombstone_is_a_null_value_for_a_key_of_a_compacted_topic() -> None:
    record = tombstone("convohub.customer-profile.v1", "cust-1", traceparent=TRACEPARENT)
    assert record.value is None
    assert record.is_tombstone
    assert record.key == b"cust-1"
    assert record.header("traceparent") == TRACEPARENT.encode()
    assert record.header("ce_id") is None  # not an event
    with pytest.raises(InvalidEventError, match="tombstone"):
        from_kafka_record(record.value, record.headers)


def test_a_tombstone_is_refused_where_it_would_delete_nothing() -> None:
    with pytest.raises(ValueError, match="not compacted"):
        tombstone("convohub.customer.v1", "cust-1")
    with pytest.raises(ValueError, match="key"):
        tombstone("convohub.customer-profile.v1", "")
    with pytest.raises(KeyError):
        tombstone("no.such.topic.v1", "cust-1")
