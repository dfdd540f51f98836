"""The Kafka binding of an event: structured JSON value, key, and routing headers.

The value is the whole CloudEvents envelope as one JSON document (self-describing for BI);
the key is the envelope's `partitionkey`; the headers repeat `ce_type` and `ce_id` so a
consumer can route or de-duplicate without parsing, and carry the W3C `traceparent`.

A record with a null value is a tombstone, not an event: on a compacted topic it says
"this key is gone" (Kafka's log compaction deletes the key's earlier records and, after
`delete.retention.ms`, the tombstone itself). `tombstone(topic, key)` builds one (only for
compacted topics of the registry); readers check `value is None` before decoding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from convohub.contracts.catalogue import InvalidEventError, decode_event, encode_event, topic_of
from convohub.contracts.envelope import Envelope
from convohub.contracts.topics import topic_named

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
TYPE_HEADER = "ce_type"
ID_HEADER = "ce_id"
TRACEPARENT_HEADER = "traceparent"
CONTENT_TYPE_HEADER = "content-type"
TRACEPARENT_PATTERN = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


@dataclass(frozen=True)
class KafkaRecord:
    """What goes on the wire for one event (or, with `value` None, a tombstone)."""

    topic: str
    key: bytes
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> bytes | None:
        """The first header of that name, if any."""
        return next((value for key, value in self.headers if key == name), None)

    @property
    def is_tombstone(self) -> bool:
        """A null value: the key is deleted from a compacted topic."""
        return self.value is None


def tombstone(topic: str, key: str, *, traceparent: str | None = None) -> KafkaRecord:
    """The tombstone of `key` on a compacted topic of the registry (a record with a null
    value; ValueError for a topic that is not compacted, where it would delete nothing)."""
    if not topic_named(topic).compacted:
        raise ValueError(f"topic {topic!r} is not compacted; a tombstone there deletes nothing")
    if not key:
        raise ValueError("a tombstone needs the key it deletes")
    headers: list[tuple[str, bytes]] = []
    if traceparent is not None:
        if not TRACEPARENT_PATTERN.match(traceparent):
            raise ValueError(f"traceparent {traceparent!r} is not a W3C trace context header")
        headers.append((TRACEPARENT_HEADER, traceparent.encode()))
    return KafkaRecord(topic=topic, key=key.encode(), value=None, headers=tuple(headers))


def to_kafka_record(event: Envelope[Any], *, traceparent: str | None = None) -> KafkaRecord:
    """Serialise an event for its topic (validating that its payload matches its type)."""
    if traceparent is not None and not TRACEPARENT_PATTERN.match(traceparent):
        raise ValueError(f"traceparent {traceparent!r} is not a W3C trace context header")
    headers = [
        (CONTENT_TYPE_HEADER, CONTENT_TYPE.encode()),
        (TYPE_HEADER, event.type.encode()),
        (ID_HEADER, event.id.encode()),
    ]
    if traceparent is not None:
        headers.append((TRACEPARENT_HEADER, traceparent.encode()))
    return KafkaRecord(
        topic=topic_of(event.type).name,
        key=event.partitionkey.encode(),
        value=encode_event(event),
        headers=tuple(headers),
    )


def from_kafka_record(
    value: bytes | None, headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] = ()
) -> Envelope[Any]:
    """Decode and validate a record's value; `ce_type` in the headers speeds up the lookup.

    Raises `InvalidEventError` when the value is not a valid event (a tombstone, whose
    value is None, is none: check for it first), or when the header and the envelope
    disagree on the type or id.
    """
    if value is None:
        raise InvalidEventError("a tombstone (a record with a null value) is not an event")
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    header_map = {key: raw for key, raw in pairs}
    type_header = header_map.get(TYPE_HEADER)
    event = decode_event(value, type_header.decode() if type_header else None)
    id_header = header_map.get(ID_HEADER)
    if id_header is not None and id_header.decode() != event.id:
        raise InvalidEventError(
            f"header ce_id {id_header.decode()!r} differs from envelope id {event.id!r}",
            event_type=event.type,
        )
    return event
