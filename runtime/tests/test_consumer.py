"""The consumer runner's own promises, on the embedded log and SQLite (fast, no servers):
infrastructure errors are retried forever and never dead-lettered, a consumed event's
trace continues into the events it causes, batches are measured, and a process's groups
decode each record once."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import MetaData
from sqlalchemy.exc import OperationalError

from convohub.contracts import (
    KafkaRecord,
    caused_by,
    decode_event,
    from_kafka_record,
    to_kafka_record,
)
from convohub.contracts.catalogue import example_event, payload_class, payload_examples
from convohub.contracts.topics import CONVERSATION
from convohub.runtime import consumer
from convohub.runtime.bus.embedded import EmbeddedBus
from convohub.runtime.bus.port import LogRecord
from convohub.runtime.consumer import ProjectionRunner, RetryPolicy, is_infrastructure_error
from convohub.runtime.metrics import RuntimeMetrics
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.settings import RuntimeSettings
from convohub.runtime.store import OUTBOX, ProjectionStore, create_engine, migrate_runtime
from convohub.runtime.telemetry import build_telemetry, inject_traceparent

RECEIVED = "convohub.conversation.message_received.v1"
CLASSIFIED = "convohub.routing.classified.v1"


class Scripted(Projection):
    """Fails as told, otherwise emits one `classified` per message."""

    name = "scripted"
    topics = (CONVERSATION.name,)
    metadata = MetaData()

    def __init__(self, failures: list[BaseException] | None = None) -> None:
        self.failures = list(failures or [])
        self.applied: list[str] = []

    async def apply(self, events: Sequence[ConsumedEvent], uow: Any) -> None:
        if self.failures:
            raise self.failures.pop(0)
        for consumed in events:
            self.applied.append(consumed.event.id)
            payload = payload_class(CLASSIFIED).model_validate(
                {**payload_examples(CLASSIFIED)[0], "conversation_id": consumed.event.partitionkey}
            )
            uow.emit(
                caused_by(consumed.event, payload, source="/convohub/test"),
                traceparent=consumed.traceparent,
            )


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


async def records_of(bus: EmbeddedBus, event: Any, traceparent: str | None = None) -> list:
    record = to_kafka_record(event, traceparent=traceparent)
    await bus.publish([record])
    partition = next(p for (t, p), end in (await bus.end_offsets([record.topic])).items() if end)
    return await bus.read(record.topic, partition, 0)


async def outbox_records(store: ProjectionStore) -> list[Any]:
    async with store.engine.connect() as connection:
        return (await connection.execute(OUTBOX.select().order_by(OUTBOX.c.seq))).all()


def test_infrastructure_errors_are_told_apart_from_processing_errors() -> None:
    assert is_infrastructure_error(OperationalError("select 1", {}, Exception("gone")))
    assert is_infrastructure_error(ConnectionResetError())
    assert not is_infrastructure_error(ValueError("bad data"))
    assert not is_infrastructure_error(KeyError("missing"))


async def test_an_infrastructure_error_propagates_and_dead_letters_nothing(parts) -> None:
    bus, store = parts
    outage = OperationalError("insert", {}, Exception("database is down"))
    projection = Scripted(failures=[outage])
    runner = ProjectionRunner(bus, store, projection, retry=RetryPolicy(attempts=3))
    records = await records_of(bus, example_event(RECEIVED))

    with pytest.raises(OperationalError):
        await runner.handle_batch(records)
    assert await outbox_records(store) == [], "no dead letter for the database's fault"
    assert await store.positions(projection.name) == {}, "the position did not move"

    await runner.handle_batch(records)  # the bus redelivers once the database is back
    assert projection.applied == [example_event(RECEIVED).id]


async def test_a_processing_error_is_retried_then_dead_lettered(parts) -> None:
    bus, store = parts
    projection = Scripted(failures=[ValueError("bad data")] * 3)
    runner = ProjectionRunner(
        bus, store, projection, retry=RetryPolicy(attempts=3, first_backoff=0.001)
    )
    records = await records_of(bus, example_event(RECEIVED))
    await runner.handle_batch(records)
    rows = await outbox_records(store)
    assert [row.topic for row in rows] == ["convohub.dlq.v1"]
    dead = decode_event(rows[0].value)
    assert dead.data.attempts == 3
    assert dead.data.error.stage == "handle"
    assert dead.data.original.event_id == example_event(RECEIVED).id
    assert (await store.positions(projection.name))[records[0].topic_partition] == 1


async def test_redelivered_and_republished_events_are_applied_once(parts) -> None:
    bus, store = parts
    projection = Scripted()
    runner = ProjectionRunner(bus, store, projection)
    event = example_event(RECEIVED)
    first = await records_of(bus, event)
    await runner.handle_batch(first)
    await runner.handle_batch(first)  # redelivery: same offset
    await bus.publish([to_kafka_record(event)])  # re-publish: same id, new offset
    partition = first[0].partition
    again = await bus.read(first[0].topic, partition, 1)
    assert again[0].offset == 1
    await runner.handle_batch(again)
    assert projection.applied == [event.id]


async def test_the_trace_of_a_consumed_event_continues_into_what_it_causes(parts) -> None:
    bus, store = parts
    exporter = InMemorySpanExporter()
    telemetry = build_telemetry(
        RuntimeSettings(service_name="test"), span_processors=[SimpleSpanProcessor(exporter)]
    )
    with telemetry.tracer.start_as_current_span("ingest webhook", kind=SpanKind.PRODUCER) as span:
        producer_traceparent = inject_traceparent()
        trace_id = span.get_span_context().trace_id
    runner = ProjectionRunner(bus, store, Scripted(), tracer=telemetry.tracer)
    await runner.handle_batch(await records_of(bus, example_event(RECEIVED), producer_traceparent))

    emitted = (await outbox_records(store))[0]
    headers = [(name, value) for name, value in emitted.headers]
    traceparent = next(value for name, value in headers if name == "traceparent")
    emitted_trace_id = base64.b64decode(traceparent).decode().split("-")[1]
    assert int(emitted_trace_id, 16) == trace_id, "one customer message, one trace"
    consumer_spans = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert len(consumer_spans) == 1
    assert consumer_spans[0].context.trace_id == trace_id
    telemetry.shutdown()


async def test_batches_and_dead_letters_are_measured(parts) -> None:
    bus, store = parts
    metrics = RuntimeMetrics()
    runner = ProjectionRunner(
        bus,
        store,
        Scripted(failures=[ValueError("x")]),
        retry=RetryPolicy(attempts=1),
        metrics=metrics,
    )
    records = await records_of(bus, example_event(RECEIVED))
    await runner.handle_batch(records)
    exposition = metrics.exposition()[0].decode()
    partition = records[0].partition
    assert (
        f'convohub_consumer_lag{{group="scripted",partition="{partition}",'
        f'topic="convohub.conversation.v1"}} 0.0'
    ) in exposition, "the applied record is no longer lag"
    assert (
        'convohub_events_processed_total{group="scripted",topic="convohub.conversation.v1"} 1.0'
        in exposition
    )
    assert (
        'convohub_dead_letters_total{group="scripted",topic="convohub.conversation.v1"} 1.0'
        in exposition
    )


async def test_the_live_runner_consumes_from_the_bus(parts) -> None:
    bus, store = parts
    projection = Scripted()
    runner = ProjectionRunner(bus, store, projection)
    await runner.start()
    try:
        event = example_event(RECEIVED)
        await bus.publish_events([event])
        for _ in range(200):
            if projection.applied:
                break
            await asyncio.sleep(0.02)
        assert projection.applied == [event.id]
    finally:
        await runner.stop()
    emitted = from_kafka_record((await outbox_records(store))[0].value)
    assert emitted.causationid == event.id


async def test_a_tombstone_is_skipped_without_a_dead_letter(parts) -> None:
    bus, store = parts
    projection = Scripted()
    runner = ProjectionRunner(bus, store, projection)
    event = example_event(RECEIVED)
    record = to_kafka_record(event)
    await bus.publish([KafkaRecord(topic=record.topic, key=record.key, value=None, headers=())])
    records = await records_of(bus, event)
    assert [r.value is None for r in records] == [True, False]

    await runner.handle_batch(records)

    assert projection.applied == [event.id]
    rows = await outbox_records(store)
    assert [row.topic for row in rows] == ["convohub.routing.v1"], "no dead letter"
    assert (await store.positions(projection.name))[records[0].topic_partition] == 2


async def test_a_dead_letter_stays_in_the_trace_of_the_event_that_failed(parts) -> None:
    bus, store = parts
    exporter = InMemorySpanExporter()
    telemetry = build_telemetry(
        RuntimeSettings(service_name="test"), span_processors=[SimpleSpanProcessor(exporter)]
    )
    producer = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    runner = ProjectionRunner(
        bus,
        store,
        Scripted(failures=[ValueError("poison")]),
        retry=RetryPolicy(attempts=1),
        tracer=telemetry.tracer,
    )
    await runner.handle_batch(await records_of(bus, example_event(RECEIVED), producer))

    (dead_letter,) = await outbox_records(store)
    assert dead_letter.topic == "convohub.dlq.v1"
    headers = dict(dead_letter.headers)
    assert base64.b64decode(headers["traceparent"]).decode() == producer
    (span,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert span.status.status_code is StatusCode.ERROR, "the failed attempt's span says so"
    assert format(span.context.trace_id, "032x") == producer.split("-")[1]
    telemetry.shutdown()


async def test_the_groups_of_a_process_decode_a_record_once(
    parts: tuple[EmbeddedBus, ProjectionStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record is decoded once for all of a process's groups (events are frozen); one that
    differs in any header is decoded on its own."""
    bus, store = parts
    decoded: list[bytes] = []
    real_decode = consumer.from_kafka_record

    def counting_decode(value: bytes, headers: Any = ()) -> Any:
        decoded.append(value)
        return real_decode(value, headers)

    monkeypatch.setattr(consumer, "from_kafka_record", counting_decode)
    # A fresh event id: the memo is the process's, and an earlier test may have decoded
    # the catalogue's example already.
    event = example_event(RECEIVED).model_copy(update={"id": f"evt-{uuid.uuid4()}"})
    (read,) = await records_of(bus, event)
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
