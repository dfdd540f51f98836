"""KafkaBus against a real Apache Kafka: the delivery contract of `bus/port.py`.

Every test makes its own topics and consumer groups (unique names) and deletes its topics.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

import pytest
from kafka.admin import KafkaAdminClient

from convohub.contracts import (
    KafkaRecord,
    Topic,
    event_types_on,
    from_kafka_record,
    to_kafka_record,
)
from convohub.contracts.catalogue import example_event
from convohub.contracts.topics import CONVERSATION
from convohub.runtime.bus.compacted import latest_by_key, live_values
from convohub.runtime.bus.kafka import KafkaBus, UnknownTopicError
from convohub.runtime.bus.partitioning import partition_for
from convohub.runtime.bus.port import LogRecord, Subscription, TopicPartition
from convohub.runtime.topics_admin import apply_topics

pytestmark = pytest.mark.integration

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
WAIT_S = 30.0  # bound of every wait for the broker; generous for a loaded 2-core machine


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def make_topic(
    kafka_bootstrap_servers: str, unique_name: Callable[..., str]
) -> Iterator[Callable[..., str]]:
    """Create a fresh topic with n partitions (through `apply_topics`; `compacted=True` for
    `cleanup.policy=compact`); deleted afterwards."""
    created: list[str] = []

    def make(partitions: int, *, compacted: bool = False) -> str:
        name = unique_name("bus")
        topic = Topic(
            name=name, key="id", description="test", producers=("test",), compacted=compacted
        )
        apply_topics(kafka_bootstrap_servers, [dataclasses.replace(topic, partitions=partitions)])
        created.append(name)
        return name

    yield make
    if created:
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers)
        try:
            admin.delete_topics(created, raise_errors=False)
        finally:
            admin.close()


@pytest.fixture
async def new_bus(
    kafka_bootstrap_servers: str, unique_name: Callable[..., str]
) -> AsyncIterator[Callable[[], Awaitable[KafkaBus]]]:
    """Started buses (one per simulated process), stopped afterwards."""
    buses: list[KafkaBus] = []

    async def make() -> KafkaBus:
        # A short heartbeat: members notice a rebalance within a fraction of a second.
        bus = KafkaBus(
            kafka_bootstrap_servers,
            client_id=unique_name("client"),
            heartbeat_interval_ms=250,
            session_timeout_ms=6_000,
        )
        await bus.start()
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.stop()


@pytest.fixture
async def bus(new_bus: Callable[[], Awaitable[KafkaBus]]) -> KafkaBus:
    return await new_bus()


class Collector:
    """A batch handler that records what it was given and lets a test await a count."""

    def __init__(self) -> None:
        self.batches: list[list[LogRecord]] = []
        self._changed = asyncio.Event()

    async def __call__(self, records: Sequence[LogRecord]) -> None:
        self.batches.append(list(records))
        self._changed.set()

    @property
    def records(self) -> list[LogRecord]:
        return [record for batch in self.batches for record in batch]

    def positions(self) -> set[tuple[int, int]]:
        return {(record.partition, record.offset) for record in self.records}

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(WAIT_S):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(f"within {WAIT_S} s: {what}; got {len(self.records)} records")


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition nothing signals (a consumer group's assignment), bounded."""
    try:
        async with asyncio.timeout(WAIT_S):
            while not condition():  # noqa: ASYNC110 - no event announces a rebalance
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"within {WAIT_S} s: {what}")


def keyed_records(topic: str, keys: int, per_key: int) -> list[KafkaRecord]:
    """Records `key-K` -> `K:N`, interleaved across keys, N ascending per key."""
    return [
        KafkaRecord(
            topic=topic,
            key=f"key-{k}".encode(),
            value=f"{k}:{n}".encode(),
            headers=(("ce_id", f"{k}-{n}".encode()),),
        )
        for n in range(per_key)
        for k in range(keys)
    ]


def all_positions(ends: dict[TopicPartition, int]) -> set[tuple[int, int]]:
    return {(partition, offset) for (_, partition), end in ends.items() for offset in range(end)}


# -- publish and deliver ----------------------------------------------------------------------


async def test_contract_events_round_trip_with_key_and_headers(
    bus: KafkaBus, make_topic: Callable[[int], str], unique_name: Callable[..., str]
) -> None:
    topic = make_topic(3)
    events = [example_event(t) for t in event_types_on(CONVERSATION)[:5]]
    records = [
        dataclasses.replace(to_kafka_record(event, traceparent=TRACEPARENT), topic=topic)
        for event in events
    ]
    await bus.publish(records)

    collector = Collector()
    subscription = await bus.subscribe(
        group=unique_name("group"), topics=[topic], handler=collector
    )
    await collector.wait_for(lambda: len(collector.records) >= len(events), "every event")
    await subscription.stop()

    by_id = {record.header("ce_id"): record for record in collector.records}
    assert len(by_id) == len(events)
    for event, sent in zip(events, records, strict=True):
        received = by_id[event.id.encode()]
        assert received.topic == topic
        assert received.key == event.partitionkey.encode() == sent.key
        assert received.value == sent.value
        assert received.headers == sent.headers
        assert received.header("ce_type") == event.type.encode()
        assert received.header("traceparent") == TRACEPARENT.encode()
        assert received.partition == partition_for(sent.key, 3)
        assert from_kafka_record(received.value, received.headers) == event


async def test_order_per_key_holds_and_keys_land_on_the_default_partitioner_partition(
    bus: KafkaBus, make_topic: Callable[[int], str], unique_name: Callable[..., str]
) -> None:
    topic = make_topic(6)
    keys, per_key = 40, 25
    records = keyed_records(topic, keys, per_key)
    for start in range(0, len(records), 300):  # several publish calls
        await bus.publish(records[start : start + 300])

    collector = Collector()
    subscription = await bus.subscribe(
        group=unique_name("group"), topics=[topic], handler=collector, max_batch=100
    )
    await collector.wait_for(lambda: len(collector.records) >= len(records), "every record")
    await subscription.stop()

    sequences: dict[bytes, list[int]] = {}
    for record in collector.records:
        assert record.key is not None
        assert record.partition == partition_for(record.key, 6), "not Kafka's partition"
        sequences.setdefault(record.key, []).append(int(record.value.split(b":")[1]))
    assert len(sequences) == keys
    assert all(sequence == list(range(per_key)) for sequence in sequences.values())
    for batch in collector.batches:
        assert len(batch) <= 100
    # Within a partition, offsets ascend without gaps from one batch to the next.
    per_partition: dict[int, list[int]] = {}
    for record in collector.records:
        per_partition.setdefault(record.partition, []).append(record.offset)
    ends = await bus.end_offsets([topic])
    assert per_partition == {p: list(range(end)) for (_, p), end in ends.items() if end}


async def test_a_failed_batch_is_redelivered_and_nothing_is_committed_before_success(
    bus: KafkaBus, make_topic: Callable[[int], str], unique_name: Callable[..., str]
) -> None:
    topic = make_topic(2)
    group = unique_name("group")
    await bus.publish(keyed_records(topic, keys=4, per_key=10))
    attempts: list[list[LogRecord]] = []
    committed_during_retry: list[dict[TopicPartition, int]] = []
    collector = Collector()

    async def fail_once(records: Sequence[LogRecord]) -> None:
        attempts.append(list(records))
        if len(attempts) == 1:
            raise RuntimeError("projection database is down")
        if len(attempts) == 2:
            committed_during_retry.append(await bus.committed(group, [topic]))
        await collector(records)

    subscription = await bus.subscribe(group=group, topics=[topic], handler=fail_once)
    await collector.wait_for(lambda: len(collector.positions()) >= 40, "all 40 records")
    ends = await bus.end_offsets([topic])
    await wait_until_committed(bus, group, topic, ends)
    await subscription.stop()

    first, second = attempts[0], attempts[1]
    first_offsets = _first_offset_per_partition(first)
    assert _first_offset_per_partition(second) == first_offsets  # rewound to the batch start
    assert {(r.partition, r.offset) for r in first} <= collector.positions()
    assert committed_during_retry == [{}], "committed before the handler returned"
    assert await bus.committed(group, [topic]) == ends


async def wait_until_committed(
    bus: KafkaBus, group: str, topic: str, ends: dict[TopicPartition, int]
) -> None:
    committed: dict[TopicPartition, int] = {}

    def caught_up() -> bool:
        return committed == {tp: end for tp, end in ends.items() if end}

    try:
        async with asyncio.timeout(WAIT_S):
            while not caught_up():
                committed = await bus.committed(group, [topic])
                if not caught_up():
                    await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"group {group} committed {committed}, expected {ends}")


def _first_offset_per_partition(records: Sequence[LogRecord]) -> dict[int, int]:
    first: dict[int, int] = {}
    for record in records:
        first.setdefault(record.partition, record.offset)
    return first


# -- consumer groups --------------------------------------------------------------------------


async def test_two_members_split_the_partitions_and_a_leaver_hands_over_without_loss(
    new_bus: Callable[[], Awaitable[KafkaBus]],
    make_topic: Callable[[int], str],
    unique_name: Callable[..., str],
) -> None:
    topic = make_topic(4)
    group = unique_name("group")
    every_partition = {(topic, p) for p in range(4)}
    bus_a, bus_b = await new_bus(), await new_bus()
    delivered_a, delivered_b = Collector(), Collector()

    member_a = await bus_a.subscribe(group=group, topics=[topic], handler=delivered_a)
    await wait_until(lambda: member_a.assignment() == every_partition, "a owns every partition")
    member_b = await bus_b.subscribe(group=group, topics=[topic], handler=delivered_b)

    def split() -> bool:
        a, b = member_a.assignment(), member_b.assignment()
        return bool(a) and bool(b) and not (a & b) and (a | b) == every_partition

    await wait_until(split, "the two members split the partitions")
    owned_by_a = {p for _, p in member_a.assignment()}

    await bus_a.publish(keyed_records(topic, keys=30, per_key=5))
    ends = await bus_a.end_offsets([topic])
    everything = all_positions(ends)
    await wait_until(
        lambda: delivered_a.positions() | delivered_b.positions() == everything,
        "the first 150 records delivered by one member or the other",
    )
    assert {p for p, _ in delivered_a.positions()} <= owned_by_a
    assert {p for p, _ in delivered_b.positions()}.isdisjoint(owned_by_a)

    await member_a.stop()
    seen_by_a = len(delivered_a.records)
    await wait_until(lambda: member_b.assignment() == every_partition, "b takes over")

    await bus_a.publish(
        [
            dataclasses.replace(r, value=b"late:" + r.value)
            for r in keyed_records(topic, keys=30, per_key=5)
        ]
    )
    ends = await bus_a.end_offsets([topic])
    everything = all_positions(ends)
    await wait_until(
        lambda: delivered_a.positions() | delivered_b.positions() == everything,
        "all 300 records delivered, none lost in the handover",
    )
    assert len(delivered_a.records) == seen_by_a, "a stopped member got records"
    taken_over = {p for p, o in delivered_b.positions() if p in owned_by_a}
    assert taken_over == owned_by_a, "b never delivered the partitions it took over"
    await member_b.stop()


async def test_stop_lets_the_batch_in_progress_finish_and_commit(
    new_bus: Callable[[], Awaitable[KafkaBus]],
    make_topic: Callable[[int], str],
    unique_name: Callable[..., str],
) -> None:
    topic = make_topic(1)
    group = unique_name("group")
    bus = await new_bus()
    await bus.publish(keyed_records(topic, keys=1, per_key=10))
    entered, release = asyncio.Event(), asyncio.Event()
    finished: list[list[LogRecord]] = []

    async def slow(records: Sequence[LogRecord]) -> None:
        entered.set()
        await release.wait()
        finished.append(list(records))

    subscription: Subscription = await bus.subscribe(group=group, topics=[topic], handler=slow)
    await asyncio.wait_for(entered.wait(), WAIT_S)
    stopping = asyncio.create_task(subscription.stop())
    done, _ = await asyncio.wait({stopping}, timeout=0.5)
    assert not done, "stop() returned while the handler was still running"
    release.set()
    await asyncio.wait_for(stopping, WAIT_S)

    assert len(finished) == 1, "the batch in progress did not finish"
    last = finished[0][-1]
    assert await bus.committed(group, [topic]) == {(topic, 0): last.offset + 1}
    assert subscription.assignment() == set()

    # A new member of the group starts right after the committed batch.
    later = Collector()
    await bus.publish(keyed_records(topic, keys=1, per_key=3))
    successor = await (await new_bus()).subscribe(group=group, topics=[topic], handler=later)
    await later.wait_for(lambda: len(later.positions()) >= 13 - last.offset - 1, "the rest")
    assert min(o for _, o in later.positions()) == last.offset + 1
    await successor.stop()


async def test_a_handler_may_stop_its_own_subscription(
    bus: KafkaBus, make_topic: Callable[[int], str], unique_name: Callable[..., str]
) -> None:
    topic = make_topic(1)
    group = unique_name("group")
    await bus.publish(keyed_records(topic, keys=1, per_key=5))
    handled: list[list[LogRecord]] = []
    subscriptions: list[Subscription] = []
    stop_returned = asyncio.Event()

    async def stop_after_first_batch(records: Sequence[LogRecord]) -> None:
        handled.append(list(records))
        await subscriptions[0].stop()  # returns at once; the member leaves after this batch
        stop_returned.set()

    subscriptions.append(
        await bus.subscribe(group=group, topics=[topic], handler=stop_after_first_batch)
    )
    await asyncio.wait_for(stop_returned.wait(), WAIT_S)
    await subscriptions[0].stop()  # idempotent; waits until the member has left

    assert len(handled) == 1
    assert await bus.committed(group, [topic]) == {(topic, 0): handled[0][-1].offset + 1}


# -- lookups ----------------------------------------------------------------------------------


async def test_lookups_partitions_end_offsets_committed_and_read(
    bus: KafkaBus, make_topic: Callable[[int], str], unique_name: Callable[..., str]
) -> None:
    topic, other = make_topic(3), make_topic(1)
    records = keyed_records(topic, keys=6, per_key=4)
    await bus.publish([*records, KafkaRecord(other, b"k", b"v", ())])

    assert await bus.partitions(topic) == 3
    ends = await bus.end_offsets([topic, other])
    assert ends[(other, 0)] == 1
    assert sum(end for (t, _), end in ends.items() if t == topic) == len(records)
    assert await bus.committed(unique_name("nobody"), [topic]) == {}

    partition = partition_for(b"key-0", 3)
    expected = [r.value for r in records if partition_for(r.key, 3) == partition]
    read = await bus.read(topic, partition, 1, max_records=2)
    assert [r.value for r in read] == expected[1:3]
    assert [r.offset for r in read] == [1, 2]
    assert await bus.read(topic, partition, ends[(topic, partition)]) == []

    with pytest.raises(UnknownTopicError):
        await bus.partitions(unique_name("missing"))
    with pytest.raises(LookupError):
        await bus.read(topic, 7, 0)


async def test_a_tombstone_is_a_null_value_on_a_compacted_topic(
    bus: KafkaBus, make_topic: Callable[..., str], unique_name: Callable[..., str]
) -> None:
    topic = make_topic(3, compacted=True)
    await bus.publish(
        [
            KafkaRecord(topic, b"cust-1", b"{}", ()),
            KafkaRecord(topic, b"cust-2", b"{}", ()),
            KafkaRecord(topic, b"cust-1", None, (("traceparent", TRACEPARENT.encode()),)),
        ]
    )

    latest = await latest_by_key(bus, topic)
    assert latest[b"cust-1"].value is None
    assert latest[b"cust-1"].header("traceparent") == TRACEPARENT.encode()
    assert latest[b"cust-2"].value == b"{}"
    assert await live_values(bus, topic) == {b"cust-2": b"{}"}
    collector = Collector()
    subscription = await bus.subscribe(group=unique_name("g"), topics=[topic], handler=collector)
    await collector.wait_for(lambda: len(collector.records) == 3, "all three records")
    await subscription.stop()
    assert [r.value for r in collector.records if r.key == b"cust-1"] == [b"{}", None]
