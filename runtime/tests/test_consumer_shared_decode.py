"""A process's projection groups decode each record once: the second group gets the event
the first one validated (events are frozen), and a record that differs in any byte of its
value or headers is decoded on its own."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData

from convohub.contracts import to_kafka_record
from convohub.contracts.catalogue import example_event
from convohub.contracts.topics import CONVERSATION
from convohub.runtime import consumer
from convohub.runtime.bus.embedded import EmbeddedBus
from convohub.runtime.bus.port import LogRecord
from convohub.runtime.consumer import ProjectionRunner
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.store import ProjectionStore, create_engine, migrate_runtime


class Recording(Projection):
    topics = (CONVERSATION.name,)
    metadata = MetaData()

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Any] = []

    async def apply(self, events: Sequence[ConsumedEvent], uow: Any) -> None:
        self.events += [consumed.event for consumed in events]


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedBus, ProjectionStore]]:
    bus = EmbeddedBus(tmp_path / "log.sqlite3")
    await bus.start()
    store = ProjectionStore(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.sqlite3'}"))
    await migrate_runtime(store.engine)
    yield bus, store
    await bus.stop()
    await store.engine.dispose()


async def test_the_groups_of_a_process_decode_a_record_once(
    parts: tuple[EmbeddedBus, ProjectionStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    bus, store = parts
    decoded: list[bytes] = []
    real_decode = consumer.from_kafka_record

    def counting_decode(value: bytes, headers: Any = ()) -> Any:
        decoded.append(value)
        return real_decode(value, headers)

    monkeypatch.setattr(consumer, "from_kafka_record", counting_decode)
    # A fresh event id: the memo is the process's, and an earlier test may have decoded
    # the catalogue's example already.
    event = example_event("convohub.conversation.message_received.v1")
    record = to_kafka_record(event.model_copy(update={"id": f"evt-{uuid.uuid4()}"}))
    await bus.publish([record])
    (read,) = [
        item
        for (topic, partition), end in (await bus.end_offsets([record.topic])).items()
        if end
        for item in await bus.read(topic, partition, 0)
    ]
    projections = [Recording("group-a"), Recording("group-b"), Recording("group-c")]
    for projection in projections:
        await ProjectionRunner(bus, store, projection).handle_batch([read])
    assert len(decoded) == 1
    first = projections[0].events[0]
    assert all(projection.events == [first] for projection in projections)
    assert all(projection.events[0] is first for projection in projections)

    # Other headers (a different trace) on the same value: decoded again, not shared.
    other: LogRecord = dataclasses.replace(
        read, offset=read.offset + 1, headers=(*read.headers, ("x-test", b"1"))
    )
    late = Recording("group-d")
    await ProjectionRunner(bus, store, late).handle_batch([other])
    assert len(decoded) == 2
    assert late.events == [first]
    assert late.events[0] is not first
