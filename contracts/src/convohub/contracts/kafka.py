"""The Kafka binding of an event: structured JSON value, key, and routing headers.

The value is the whole CloudEvents envelope as one JSON document (self-describing for BI);
the key is the envelope's `partitionkey`; the headers repeat `ce_type` and `ce_id` so a
consumer can route or de-duplicate without parsing, and carry the W3C `traceparent`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from convohub.contracts.catalogue import InvalidEventError, decode_event, encode_event, topic_of
from convohub.contracts.envelope import Envelope

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
TYPE_HEADER = "ce_type"
ID_HEADER = "ce_id"
TRACEPARENT_HEADER = "traceparent"
CONTENT_TYPE_HEADER = "content-type"
TRACEPARENT_PATTERN = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


@dataclass(frozen=True)
class KafkaRecord:
    """What goes on the wire for one event."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> bytes | None:
        """The first header of that name, if any."""
        return next((value for key, value in self.headers if key == name), None)


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
    value: bytes, headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] = ()
) -> Envelope[Any]:
    """Decode and validate a record's value; `ce_type` in the headers speeds up the lookup.

    Raises `InvalidEventError` when the value is not a valid event, or when the header and
    the envelope disagree on the type or id.
    """
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
