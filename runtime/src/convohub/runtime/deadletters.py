"""Operating the dead-letter topic: list, show and redrive.

A redrive re-publishes the original record to its original topic with the header
`convohub_redrive_group` naming the consumer group that failed: that group applies it
again (after the fix), and every other group skips it, since they processed the original.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from convohub.contracts import Envelope, KafkaRecord, from_kafka_record
from convohub.contracts.events.deadletter import DeadLetterValueEncoding, EventDeadLettered
from convohub.contracts.topics import DEAD_LETTER
from convohub.runtime.bus.port import EventBus
from convohub.runtime.consumer import REDRIVE_HEADER


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter topic."""

    event: Envelope[EventDeadLettered]
    partition: int
    offset: int

    @property
    def id(self) -> str:
        return self.event.id

    @property
    def data(self) -> EventDeadLettered:
        return self.event.data

    def summary(self) -> dict[str, Any]:
        data = self.data
        return {
            "id": self.id,
            "handler": data.handler,
            "topic": data.original.topic,
            "partition": data.original.partition,
            "offset": data.original.offset,
            "event_type": data.original.event_type,
            "error": f"{data.error.stage}: {data.error.type.rsplit('.', 1)[-1]}",
            "attempts": data.attempts,
            "dead_lettered_at": data.dead_lettered_at.isoformat(),
        }


async def list_dead_letters(bus: EventBus, *, handler: str | None = None) -> list[DeadLetter]:
    """Every dead letter on the topic (optionally of one handler), oldest first."""
    ends = await bus.end_offsets([DEAD_LETTER.name])
    found: list[DeadLetter] = []
    for (topic, partition), end in sorted(ends.items()):
        offset = 0
        while offset < end:
            records = await bus.read(topic, partition, offset, 500)
            if not records:
                break
            for record in records:
                event = from_kafka_record(record.value, record.headers)
                if handler is None or event.data.handler == handler:
                    found.append(DeadLetter(event, record.partition, record.offset))
            offset = records[-1].offset + 1
    return sorted(found, key=lambda d: d.data.dead_lettered_at)


async def find_dead_letter(bus: EventBus, dead_letter_id: str) -> DeadLetter:
    """The dead letter with this event id; KeyError when there is none."""
    for dead_letter in await list_dead_letters(bus):
        if dead_letter.id == dead_letter_id:
            return dead_letter
    raise KeyError(f"no dead letter with id {dead_letter_id!r}")


def original_record(dead_letter: DeadLetter) -> KafkaRecord:
    """The original record, rebuilt from the dead letter, addressed to its failed handler."""
    data = dead_letter.data
    if data.original_value_encoding == DeadLetterValueEncoding.BASE64:
        value = base64.b64decode(data.original_value)
    else:
        value = data.original_value.encode()
    headers = [(k, v.encode()) for k, v in data.original_headers.items() if k != REDRIVE_HEADER]
    headers.append((REDRIVE_HEADER, data.handler.encode()))
    key = (data.original.key or "").encode()
    return KafkaRecord(topic=data.original.topic, key=key, value=value, headers=tuple(headers))


async def redrive(bus: EventBus, dead_letter_id: str) -> KafkaRecord:
    """Publish a dead letter's original record again, for its handler only."""
    record = original_record(await find_dead_letter(bus, dead_letter_id))
    await bus.publish([record])
    return record
