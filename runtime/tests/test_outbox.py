"""The outbox relay against a recording fake bus, on SQLite and on the real PostgreSQL.

(End to end against real Kafka is the scenario suite's job.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from convohub.contracts import Envelope, KafkaRecord, to_kafka_record
from convohub.contracts.catalogue import example_event
from convohub.runtime.bus.port import BatchHandler, EventBus, LogRecord, Subscription
from convohub.runtime.store import (
    OUTBOX,
    OutboxRelay,
    ProjectionStore,
    create_engine,
    migrate_runtime,
)

WAIT_SECONDS = 10


def event_with_id(event_id: str) -> Envelope[Any]:
    return example_event("convohub.conversation.closed.v1").model_copy(update={"id": event_id})


class BrokerDown(Exception):
    pass


class RecordingBus(EventBus):
    """Records every `publish` call. `fail` maps a call number (from 0) to "before"
    (raise, nothing reached the log) or "after" (the log has the records, the ack got lost)."""

    def __init__(self, fail: dict[int, str] | None = None) -> None:
        self.fail = fail or {}
        self.calls: list[list[KafkaRecord]] = []
        self.attempts = 0
        self.gate: asyncio.Event | None = None  # when set up, publish waits for it
        self.entered = asyncio.Event()
        self._changed = asyncio.Event()

    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        call, self.attempts = self.attempts, self.attempts + 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        failure = self.fail.get(call)
        if failure == "before":
            raise BrokerDown
        self.calls.append(list(records))
        self._changed.set()
        if failure == "after":
            raise BrokerDown

    @property
    def published_ids(self) -> list[str]:
        return [record.header("ce_id").decode() for call in self.calls for record in call]

    async def wait_for_ids(self, *event_ids: str) -> None:
        async def arrived() -> None:
            while not set(event_ids) <= set(self.published_ids):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(arrived(), WAIT_SECONDS)
        except TimeoutError:
            pytest.fail(f"{event_ids} not published within {WAIT_SECONDS}s: {self.published_ids}")

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def subscribe(
        self, *, group: str, topics: Sequence[str], handler: BatchHandler, max_batch: int = 500
    ) -> Subscription:
        raise NotImplementedError

    async def partitions(self, topic: str) -> int:
        raise NotImplementedError

    async def end_offsets(self, topics: Sequence[str]) -> dict[tuple[str, int], int]:
        raise NotImplementedError

    async def committed(self, group: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
        raise NotImplementedError

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int = 500
    ) -> list[LogRecord]:
        raise NotImplementedError


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[ProjectionStore]:
    engine = create_engine(store_url)
    await migrate_runtime(engine)
    yield ProjectionStore(engine)
    await engine.dispose()


async def commit_events(store: ProjectionStore, *event_ids: str) -> None:
    async with store.unit_of_work() as uow:
        for event_id in event_ids:
            uow.emit(event_with_id(event_id))
        await uow.commit()


async def emit_then_fail(store: ProjectionStore, event_id: str) -> None:
    async with store.unit_of_work() as uow:
        uow.emit(event_with_id(event_id))
        raise BrokerDown


async def advisory_locks_held(engine: AsyncEngine) -> int:
    query = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    async with engine.connect() as connection:
        return await connection.scalar(query)


# -- publishing --------------------------------------------------------------------------------


async def test_the_relay_publishes_in_seq_order_and_marks_rows_published(
    store: ProjectionStore,
) -> None:
    await commit_events(store, "e1", "e2")
    await commit_events(store, "e3")
    await commit_events(store, "e4", "e5")
    bus = RecordingBus()
    relay = OutboxRelay(store, bus, batch_size=2)

    assert await relay.publish_pending() == 5

    assert [[r.header("ce_id") for r in call] for call in bus.calls] == [
        [b"e1", b"e2"],
        [b"e3", b"e4"],
        [b"e5"],
    ]
    assert bus.calls[0][0] == to_kafka_record(event_with_id("e1"))  # byte for byte
    assert await relay.pending_count() == 0
    assert await relay.publish_pending() == 0
    assert len(bus.calls) == 3


async def test_a_raw_record_is_published_byte_for_byte(store: ProjectionStore) -> None:
    record = KafkaRecord(
        topic="convohub.dlq.v1",
        key=b"\x00\xff key",
        value=b"\x80 not utf-8 \xfe",
        headers=(("ce_id", b"dlq-1"), ("binary", b"\xff\x00\x01"), ("empty", b"")),
    )
    async with store.unit_of_work() as uow:
        uow.emit_record(record, event_id="dlq-1")
        await uow.commit()
    bus = RecordingBus()

    assert await OutboxRelay(store, bus).publish_pending() == 1

    assert bus.calls == [[record]]


async def test_a_tombstone_goes_out_as_a_null_value_after_what_was_emitted_before(
    store: ProjectionStore,
) -> None:
    snapshot = event_with_id("e1")
    async with store.unit_of_work() as uow:
        uow.emit(snapshot)
        uow.emit_tombstone("convohub.customer-profile.v1", "cust-1", tombstone_id="t-1")
        uow.emit_tombstone("convohub.customer-profile.v1", "cust-1", tombstone_id="t-1")
        await uow.commit()
    bus = RecordingBus()

    assert await OutboxRelay(store, bus).publish_pending() == 2

    [[first, second]] = bus.calls
    assert first == to_kafka_record(snapshot)
    assert second == KafkaRecord(
        topic="convohub.customer-profile.v1", key=b"cust-1", value=None, headers=()
    )


async def test_a_failed_publish_leaves_its_rows_for_the_next_round(
    store: ProjectionStore,
) -> None:
    await commit_events(store, "e1", "e2", "e3", "e4", "e5")
    bus = RecordingBus(fail={1: "before"})
    relay = OutboxRelay(store, bus, batch_size=2)

    with pytest.raises(BrokerDown):
        await relay.publish_pending()
    assert bus.published_ids == ["e1", "e2"]
    assert await relay.pending_count() == 3

    assert await relay.publish_pending() == 3
    assert bus.published_ids == ["e1", "e2", "e3", "e4", "e5"]


async def test_a_lost_acknowledgement_republishes_the_same_event_ids(
    store: ProjectionStore,
) -> None:
    await commit_events(store, "e1", "e2")
    bus = RecordingBus(fail={0: "after"})
    relay = OutboxRelay(store, bus)

    with pytest.raises(BrokerDown):
        await relay.publish_pending()
    assert await relay.publish_pending() == 2

    assert bus.published_ids == ["e1", "e2", "e1", "e2"]
    assert bus.calls[0] == bus.calls[1]


async def test_nothing_rolled_back_is_published(store: ProjectionStore) -> None:
    with pytest.raises(BrokerDown):
        await emit_then_fail(store, "e1")
    async with store.unit_of_work() as uow:
        uow.emit(event_with_id("e2"))  # never committed
    bus = RecordingBus()

    assert await OutboxRelay(store, bus).publish_pending() == 0
    assert bus.calls == []


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_an_idle_relay_does_not_queue_for_the_sqlite_write_lock(
    store: ProjectionStore,
) -> None:
    """With nothing to publish, a round answers at once even while a batch holds the write
    lock: an idle relay polling every 50 ms must not stand in the batches' way."""
    bus = RecordingBus()
    relay = OutboxRelay(store, bus)
    async with store.unit_of_work() as batch:  # holds the write lock (and the store's turn)
        assert await asyncio.wait_for(relay.publish_pending(), timeout=5) == 0
        batch.emit(event_with_id("e1"))
        await batch.commit()
    assert await relay.publish_pending() == 1
    assert bus.published_ids == ["e1"]


@pytest.mark.integration
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_rows_of_an_open_transaction_are_not_published(store: ProjectionStore) -> None:
    bus = RecordingBus()
    relay = OutboxRelay(store, bus)
    async with store.engine.connect() as writer:
        await writer.execute(
            OUTBOX.insert().values(
                event_id="e1",
                topic="t",
                key=b"k",
                value=b"v",
                headers=[["ce_id", "ZTE="]],
                created_at=datetime.now(UTC),
            )
        )
        assert await relay.publish_pending() == 0
        await writer.commit()

    assert await relay.publish_pending() == 1
    assert bus.published_ids == ["e1"]


@pytest.mark.integration
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_only_one_relay_publishes_at_a_time(store: ProjectionStore) -> None:
    await commit_events(store, "e1", "e2")
    bus = RecordingBus()
    bus.gate = asyncio.Event()
    first = asyncio.create_task(OutboxRelay(store.engine, bus).publish_pending())
    await asyncio.wait_for(bus.entered.wait(), WAIT_SECONDS)

    other_bus = RecordingBus()
    assert await OutboxRelay(store.engine, other_bus).publish_pending() == 0  # lock taken
    bus.gate.set()
    assert await asyncio.wait_for(first, WAIT_SECONDS) == 2
    assert await OutboxRelay(store.engine, other_bus).publish_pending() == 0  # nothing left
    assert bus.published_ids == ["e1", "e2"]
    assert other_bus.calls == []
    assert await advisory_locks_held(store.engine) == 0


# -- running -----------------------------------------------------------------------------------


async def test_run_publishes_on_commit_and_stops_when_cancelled(store: ProjectionStore) -> None:
    bus = RecordingBus()
    relay = OutboxRelay(store, bus, poll_interval=3600)  # only a wake-up can be quick enough
    await commit_events(store, "e1")
    running = asyncio.create_task(relay.run())
    await bus.wait_for_ids("e1")

    await commit_events(store, "e2")
    await bus.wait_for_ids("e2")

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert bus.published_ids == ["e1", "e2"]
    # Cancelled between publishing e2 and marking it, e2 goes out again: nothing is stuck.
    assert await relay.publish_pending() in (0, 1)
    assert await relay.pending_count() == 0
    if store.engine.dialect.name == "postgresql":
        assert await advisory_locks_held(store.engine) == 0


async def test_a_relay_asked_to_stop_mid_publish_finishes_its_round_and_doubles_nothing(
    store: ProjectionStore,
) -> None:
    """How a host stops its relays: the round in flight commits its marks, so the drain
    after it has nothing to publish again (a cancel there would double the batch)."""
    bus = RecordingBus()
    bus.gate = asyncio.Event()
    relay = OutboxRelay(store, bus, poll_interval=3600)
    await commit_events(store, "e1", "e2")
    running = asyncio.create_task(relay.run())
    await asyncio.wait_for(bus.entered.wait(), WAIT_SECONDS)  # the log has not answered yet

    relay.stop_after_round()
    bus.gate.set()
    await asyncio.wait_for(running, WAIT_SECONDS)  # returns, not cancelled
    assert await relay.publish_pending() == 0
    assert bus.published_ids == ["e1", "e2"]


async def test_run_polls_for_rows_committed_elsewhere_and_retries_failures(
    store: ProjectionStore,
) -> None:
    bus = RecordingBus(fail={0: "before"})
    relay = OutboxRelay(store.engine, bus, poll_interval=0.01)  # no on_commit wake-up
    running = asyncio.create_task(relay.run())
    try:
        await commit_events(store, "e1")
        await bus.wait_for_ids("e1")
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert bus.published_ids == ["e1"]


async def test_purge_deletes_only_rows_published_long_enough_ago(store: ProjectionStore) -> None:
    await commit_events(store, "e1", "e2", "e3")
    relay = OutboxRelay(store, RecordingBus())
    await relay.publish_pending()
    await commit_events(store, "e4")

    assert await relay.purge_published(timedelta(hours=1)) == 0
    assert await relay.purge_published(timedelta(0)) == 3

    async with store.engine.connect() as connection:
        assert (await connection.execute(select(OUTBOX.c.event_id))).scalars().all() == ["e4"]
    assert await relay.pending_count() == 1
