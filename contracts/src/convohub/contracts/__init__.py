"""ConvoHub event contracts: the envelope, the v1 catalogue, topics and their bindings.

Import what you need from here; the submodules are the documentation:

- `envelope`: the CloudEvents envelope and `new_event` / `caused_by`.
- `events.*`: every payload, one module per area.
- `topics`: the topic registry.
- `catalogue`: lookups by type, `decode_event` / `encode_event`.
- `kafka`: the Kafka record binding.
- `personal`: where personal data sits, and redaction.
- `schemas`, `asyncapi`, `compatibility`: the exported documents and the breaking-change check.
"""

from convohub.contracts.catalogue import (
    InvalidEventError,
    UnknownEventTypeError,
    decode_event,
    encode_event,
    envelope_class,
    event_types,
    event_types_on,
    payload_class,
    topic_of,
)
from convohub.contracts.envelope import Envelope, caused_by, derived_event_id, new_event
from convohub.contracts.kafka import KafkaRecord, from_kafka_record, to_kafka_record, tombstone
from convohub.contracts.payload import EventPayload, ValueObject
from convohub.contracts.topics import TOPICS, Topic

__all__ = [
    "TOPICS",
    "Envelope",
    "EventPayload",
    "InvalidEventError",
    "KafkaRecord",
    "Topic",
    "UnknownEventTypeError",
    "ValueObject",
    "caused_by",
    "decode_event",
    "derived_event_id",
    "encode_event",
    "envelope_class",
    "event_types",
    "event_types_on",
    "from_kafka_record",
    "new_event",
    "payload_class",
    "to_kafka_record",
    "tombstone",
    "topic_of",
]
