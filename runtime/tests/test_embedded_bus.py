"""The embedded log keeps the port's contract, in one process and across processes.

Every test runs on its own SQLite file under `tmp_path`. Processes that must die with
SIGKILL are real child processes (forked from a forkserver) running a small script.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import random
import runpy
import signal
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convohub.contracts import (
    KafkaRecord,
    event_types,
    from_kafka_record,
    to_kafka_record,
    tombstone,
)
from convohub.contracts.catalogue import example_event
from convohub.contracts.kafka import ID_HEADER
from convohub.contracts.topics import TOPICS, topic_named
from convohub.runtime.bus.compacted import latest_by_key, live_values
from convohub.runtime.bus.embedded import (
    AUTO_CREATE_PARTITIONS,
    EmbeddedBus,
    UnknownTopicError,
    assign_partitions,
)
from convohub.runtime.bus.partitioning import partition_for
from convohub.runtime.bus.port import LogRecord, Subscription, TopicPartition

WAIT_SECONDS = 20.0
TOPIC = "test.orders"


class Collector:
    """A batch handler that remembers what it got and lets a test await a count."""

    def __init__(self) -> None:
        self.batches: list[list[LogRecord]] = []
        self.seen: set[tuple[str, int, int]] = set()
        self._changed = asyncio.Event()

    async def __call__(self, batch: Sequence[LogRecord]) -> None:
        self.batches.append(list(batch))
        self.seen.update((r.topic, r.partition, r.offset) for r in batch)
        self._changed.set()

    @property
    def records(self) -> list[LogRecord]:
        return [record for batch in self.batches for record in batch]

    async def wait_for_distinct(self, count: int) -> None:
        async def reached() -> None:
            while len(self.seen) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(reached(), WAIT_SECONDS)
        except TimeoutError:
            pytest.fail(f"handler got {len(self.seen)} distinct records, expected {count}")


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition that no event announces (group membership settling)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


def make_bus(path: Path, **options: float) -> EmbeddedBus:
    settings = {"poll_interval": 0.01, "member_timeout": 5.0, "heartbeat_interval": 0.1}
    settings.update(options)
    return EmbeddedBus(path, **settings)


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[EmbeddedBus]:
    bus = make_bus(tmp_path / "log.db")
    await bus.start()
    yield bus
    await bus.stop()


def keyed_records(count: int, keys: int, *, tag: str = "r") -> list[KafkaRecord]:
    """`count` records over `keys` keys; each value is `tag:key:sequence-within-key`."""
    sequence: dict[int, int] = defaultdict(int)
    records = []
    for i in range(count):
        key = i % keys
        records.append(
            KafkaRecord(
                topic=TOPIC,
                key=f"key-{key}".encode(),
                value=f"{tag}:{key}:{sequence[key]}".encode(),
                headers=(("ce_id", f"{tag}-{i}".encode()),),
            )
        )
        sequence[key] += 1
    return records


async def read_all(bus: EmbeddedBus, topic: str) -> dict[int, list[LogRecord]]:
    return {
        partition: await bus.read(topic, partition, 0, max_records=100_000)
        for partition in range(await bus.partitions(topic))
    }


# -- publish and subscribe -------------------------------------------------------------------


async def test_contract_events_round_trip_onto_their_registry_partitions(bus: EmbeddedBus):
    events = [example_event(event_type) for event_type in event_types()]
    records = [to_kafka_record(event) for event in events]
    await bus.publish(records)
    topics = sorted({record.topic for record in records})
    for topic in TOPICS:
        assert await bus.partitions(topic.name) == topic.partitions

    received = Collector()
    subscription = await bus.subscribe(group="round-trip", topics=topics, handler=received)
    await received.wait_for_distinct(len(records))
    await subscription.stop()

    by_id = {record.header(ID_HEADER): record for record in received.records}
    assert len(by_id) == len(events)
    for event, sent in zip(events, records, strict=True):
        got = by_id[event.id.encode()]
        assert from_kafka_record(got.value, got.headers) == event
        assert (got.topic, got.key, got.headers) == (sent.topic, sent.key, sent.headers)
        assert got.partition == partition_for(sent.key, topic_named(sent.topic).partitions)
    written = {tp: end for tp, end in (await bus.end_offsets(topics)).items() if end}
    assert await bus.committed("round-trip", topics) == written


async def test_order_per_key_holds_across_many_keys(bus: EmbeddedBus):
    await bus.create_topic(TOPIC, 8)
    records = keyed_records(2000, keys=50)
    rng = random.Random(7)
    start = 0
    while start < len(records):  # publish calls of uneven sizes
        size = rng.randint(1, 97)
        await bus.publish(records[start : start + size])
        start += size

    received = Collector()
    subscription = await bus.subscribe(
        group="order", topics=[TOPIC], handler=received, max_batch=64
    )
    await received.wait_for_distinct(len(records))
    await subscription.stop()

    sequences: dict[str, list[int]] = defaultdict(list)
    for record in received.records:
        _, key, sequence = record.value.decode().split(":")
        sequences[key].append(int(sequence))
        assert record.partition == partition_for(record.key or b"", 8)
    assert len(sequences) == 50
    assert all(seq == list(range(40)) for seq in sequences.values()), sequences
    assert len({record.partition for record in received.records}) > 1
    assert all(len(batch) <= 64 for batch in received.batches)


async def test_offsets_are_dense_and_survive_reopening_the_file(tmp_path: Path):
    path = tmp_path / "log.db"
    first = make_bus(path)
    await first.start()
    await first.create_topic(TOPIC, 4)
    for tag in ("a", "b", "c"):
        await first.publish(keyed_records(150, keys=13, tag=tag))
    ends = await first.end_offsets([TOPIC])
    before = await read_all(first, TOPIC)
    await first.stop()

    assert sum(ends.values()) == 450
    for partition, records in before.items():
        assert [r.offset for r in records] == list(range(ends[(TOPIC, partition)]))

    reopened = make_bus(path)
    await reopened.start()
    try:
        assert await reopened.end_offsets([TOPIC]) == ends
        assert await read_all(reopened, TOPIC) == before
        middle = await reopened.read(TOPIC, 0, 5, max_records=3)
        assert middle == before[0][5:8]
        assert await reopened.read(TOPIC, 0, ends[(TOPIC, 0)]) == []

        await reopened.publish(keyed_records(1, keys=1, tag="after"))
        partition = partition_for(b"key-0", 4)
        [appended] = await reopened.read(TOPIC, partition, ends[(TOPIC, partition)])
        assert appended.offset == ends[(TOPIC, partition)]
        assert appended.value == b"after:0:0"
    finally:
        await reopened.stop()


async def test_a_tombstone_is_kept_read_and_delivered_as_a_null_value(bus: EmbeddedBus):
    profile = "convohub.customer-profile.v1"
    snapshot = KafkaRecord(topic=profile, key=b"cust-1", value=b"{}", headers=())
    other = KafkaRecord(topic=profile, key=b"cust-2", value=b"{}", headers=())
    await bus.publish([snapshot, other, tombstone(profile, "cust-1")])

    latest = await latest_by_key(bus, profile)
    assert latest[b"cust-1"].value is None
    assert latest[b"cust-1"].is_tombstone
    assert latest[b"cust-2"].value == b"{}"
    assert await live_values(bus, profile) == {b"cust-2": b"{}"}
    collector = Collector()
    subscription = await bus.subscribe(group="g", topics=[profile], handler=collector)
    await collector.wait_for_distinct(3)
    await subscription.stop()
    assert [r.value for r in collector.records if r.key == b"cust-1"] == [b"{}", None]


async def test_a_log_of_schema_version_1_is_upgraded_to_hold_tombstones(tmp_path: Path):
    path = tmp_path / "old-log.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.executescript(
            """
            CREATE TABLE topics (name TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
            CREATE TABLE records (
                topic TEXT NOT NULL, partition_id INTEGER NOT NULL,
                record_offset INTEGER NOT NULL, record_key BLOB, record_value BLOB NOT NULL,
                headers TEXT NOT NULL, timestamp_ms INTEGER NOT NULL,
                PRIMARY KEY (topic, partition_id, record_offset));
            INSERT INTO topics VALUES ('test.orders', 1);
            INSERT INTO records VALUES ('test.orders', 0, 0, x'6b', x'7631', '[]', 1);
            PRAGMA user_version = 1;
            """
        )
    bus = make_bus(path)
    await bus.start()
    try:
        await bus.publish([KafkaRecord(topic=TOPIC, key=b"k", value=None, headers=())])
        records = await bus.read(TOPIC, 0, 0)
    finally:
        await bus.stop()
    assert [(r.offset, r.key, r.value) for r in records] == [(0, b"k", b"v1"), (1, b"k", None)]
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 2


async def test_unknown_topics_are_created_on_publish_and_never_shrink(bus: EmbeddedBus):
    with pytest.raises(UnknownTopicError):
        await bus.partitions("test.unknown")
    with pytest.raises(UnknownTopicError):
        await bus.end_offsets(["test.unknown"])
    with pytest.raises(UnknownTopicError):
        await bus.committed("any", ["test.unknown"])

    await bus.publish([KafkaRecord("test.unknown", b"k", b"v", ())])
    assert await bus.partitions("test.unknown") == AUTO_CREATE_PARTITIONS

    await bus.create_topic("test.unknown", 5)
    assert await bus.partitions("test.unknown") == 5
    with pytest.raises(ValueError, match="cannot shrink"):
        await bus.create_topic("test.unknown", 2)
    with pytest.raises(UnknownTopicError):
        await bus.read("test.unknown", 5, 0)


# -- the delivery contract -------------------------------------------------------------------


async def test_a_failed_batch_is_redelivered_and_nothing_is_committed_before_success(
    bus: EmbeddedBus,
):
    await bus.create_topic(TOPIC, 1)
    await bus.publish(keyed_records(10, keys=3))
    calls: list[list[LogRecord]] = []
    committed_during_calls: list[dict[TopicPartition, int]] = []
    succeeded = asyncio.Event()

    async def fail_once(batch: Sequence[LogRecord]) -> None:
        calls.append(list(batch))
        committed_during_calls.append(await bus.committed("retry", [TOPIC]))
        if len(calls) == 1:
            raise RuntimeError("the projection database is down")
        succeeded.set()

    subscription = await bus.subscribe(group="retry", topics=[TOPIC], handler=fail_once)
    await asyncio.wait_for(succeeded.wait(), WAIT_SECONDS)
    await subscription.stop()

    assert len(calls) == 2
    assert calls[0] == calls[1]
    assert [r.offset for r in calls[0]] == list(range(10))
    assert committed_during_calls == [{}, {}]
    assert await bus.committed("retry", [TOPIC]) == {(TOPIC, 0): 10}


async def test_stop_lets_the_batch_in_progress_finish_and_commit(bus: EmbeddedBus):
    await bus.create_topic(TOPIC, 2)
    await bus.publish(keyed_records(20, keys=4))
    entered = asyncio.Event()
    release = asyncio.Event()
    handled: list[LogRecord] = []

    async def slow(batch: Sequence[LogRecord]) -> None:
        entered.set()
        await release.wait()
        handled.extend(batch)

    subscription = await bus.subscribe(group="stop", topics=[TOPIC], handler=slow)
    await asyncio.wait_for(entered.wait(), WAIT_SECONDS)
    stopping = asyncio.create_task(subscription.stop())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not stopping.done(), "stop() returned while the handler was still running"
    release.set()
    await asyncio.wait_for(stopping, WAIT_SECONDS)

    assert len(handled) == 20
    assert await bus.committed("stop", [TOPIC]) == await bus.end_offsets([TOPIC])
    assert subscription.assignment() == set()


async def test_a_handler_may_stop_its_own_subscription(bus: EmbeddedBus):
    await bus.create_topic(TOPIC, 1)
    await bus.publish(keyed_records(5, keys=1))
    subscription: asyncio.Future[Subscription] = asyncio.get_running_loop().create_future()
    handled: list[LogRecord] = []
    returned = asyncio.Event()

    async def stop_after_one_batch(batch: Sequence[LogRecord]) -> None:
        await (await subscription).stop()  # must not wait for this very handler
        handled.extend(batch)
        returned.set()

    subscription.set_result(
        await bus.subscribe(group="self-stop", topics=[TOPIC], handler=stop_after_one_batch)
    )
    await asyncio.wait_for(returned.wait(), WAIT_SECONDS)
    await asyncio.wait_for(subscription.result().stop(), WAIT_SECONDS)
    assert len(handled) == 5
    assert subscription.result().assignment() == set()
    assert await bus.committed("self-stop", [TOPIC]) == {(TOPIC, 0): 5}


async def test_two_members_split_the_partitions_and_a_leaver_hands_over(tmp_path: Path):
    # Two buses on one file behave like two processes.
    path = tmp_path / "log.db"
    bus_a, bus_b = make_bus(path), make_bus(path)
    await bus_a.start()
    await bus_b.start()
    try:
        await bus_a.create_topic(TOPIC, 6)
        await split_and_hand_over(bus_a, bus_b)
    finally:
        await bus_b.stop()
        await bus_a.stop()


async def split_and_hand_over(bus_a: EmbeddedBus, bus_b: EmbeddedBus) -> None:
    everything = {(TOPIC, p) for p in range(6)}
    await bus_a.publish(keyed_records(300, keys=30, tag="one"))
    got_a, got_b = Collector(), Collector()
    member_a = await bus_a.subscribe(group="split", topics=[TOPIC], handler=got_a, max_batch=50)
    member_b = await bus_b.subscribe(group="split", topics=[TOPIC], handler=got_b, max_batch=50)
    await wait_until(
        lambda: (
            member_a.assignment().isdisjoint(member_b.assignment())
            and member_a.assignment() | member_b.assignment() == everything
        ),
        "the two members split the partitions",
    )
    owned_a, owned_b = member_a.assignment(), member_b.assignment()
    assert len(owned_a) == len(owned_b) == 3

    # While membership is stable, each partition goes to its owner only, and only once.
    await wait_until(lambda: len(got_a.seen | got_b.seen) == 300, "round one was processed")
    await bus_a.publish(keyed_records(300, keys=30, tag="two"))
    await wait_until(lambda: len(got_a.seen | got_b.seen) == 600, "round two was processed")
    for collector, owned in ((got_a, owned_a), (got_b, owned_b)):
        round_two = [r for r in collector.records if r.value.startswith(b"two:")]
        assert round_two, "a member got no share of round two"
        assert {r.topic_partition for r in round_two} <= owned
    round_two = [r for r in got_a.records + got_b.records if r.value.startswith(b"two:")]
    assert len(round_two) == 300, "a record was delivered twice while membership was stable"

    # B leaves after committing all it processed: A takes its partitions over from B's
    # committed offsets (so it sees none of B's old records again) and loses nothing.
    await member_b.stop()
    batches_before_takeover = len(got_a.batches)
    await wait_until(lambda: member_a.assignment() == everything, "A owns every partition")
    await bus_a.publish(keyed_records(300, keys=30, tag="three"))
    await wait_until(
        lambda: len(got_a.seen | got_b.seen) == 900, "every record was processed by someone"
    )
    await member_a.stop()
    taken_over = [
        r
        for batch in got_a.batches[batches_before_takeover:]
        for r in batch
        if r.topic_partition in owned_b
    ]
    assert taken_over, "A processed nothing of B's partitions"
    assert all(r.value.startswith(b"three:") for r in taken_over), "A did not resume at B's"
    three = [r for r in got_a.records if r.value.startswith(b"three:")]
    assert {r.topic_partition for r in three} == everything
    assert len(three) == 300
    assert await bus_a.committed("split", [TOPIC]) == await bus_a.end_offsets([TOPIC])


# -- processes killed with SIGKILL -----------------------------------------------------------
# Children fork from a forkserver that imported the bus once, so each starts in milliseconds;
# each runs a small script (`ARGS` holds its arguments) and shares nothing with the test.

PUBLISHER = """
import asyncio, os, signal
from pathlib import Path
from convohub.contracts import KafkaRecord
from convohub.runtime.bus.embedded import EmbeddedBus

async def main(path, topic, count, tag, kill):
    bus = EmbeddedBus(Path(path), topics=())
    await bus.start()
    for i in range(count):
        record = KafkaRecord(topic, f"key-{i % 10}".encode(), f"{tag}:{i}".encode(), ())
        await bus.publish([record])
    if kill:
        os.kill(os.getpid(), signal.SIGKILL)  # right after the last acknowledgement
    await bus.stop()

path, topic, count, tag, kill = ARGS
asyncio.run(main(path, topic, int(count), tag, kill == "kill"))
"""

CONSUMER = """
import asyncio
from pathlib import Path
from convohub.runtime.bus.embedded import EmbeddedBus

async def main(path, topic, group, processed_log):
    bus = EmbeddedBus(Path(path), topics=(), poll_interval=0.01,
                      member_timeout=0.5, heartbeat_interval=0.1)
    await bus.start()
    with open(processed_log, "a", buffering=1) as processed:
        async def handle(batch):
            for record in batch:
                processed.write(f"{record.partition} {record.offset}\\n")
            await asyncio.sleep(0.01)  # a projection's write, so the kill lands mid-stream

        await bus.subscribe(group=group, topics=[topic], handler=handle, max_batch=10)
        await asyncio.Event().wait()

asyncio.run(main(*ARGS))
"""


@functools.cache
def child_processes() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["convohub.runtime.bus.embedded"])
    return context


def start_child(tmp_path: Path, source: str, *args: str) -> multiprocessing.process.BaseProcess:
    script = tmp_path / f"child_{uuid.uuid4().hex}.py"
    script.write_text(source)
    process = child_processes().Process(
        target=runpy.run_path,
        args=(str(script),),
        kwargs={"init_globals": {"ARGS": list(args)}, "run_name": "__main__"},
        daemon=True,
    )
    process.start()
    return process


async def exit_code(process: multiprocessing.process.BaseProcess) -> int:
    await asyncio.to_thread(process.join, WAIT_SECONDS)
    assert process.exitcode is not None, f"child {process.pid} is still running"
    return process.exitcode


async def test_acknowledged_publishes_survive_sigkill(tmp_path: Path):
    path = tmp_path / "log.db"
    setup = make_bus(path)
    await setup.start()
    await setup.create_topic(TOPIC, 4)
    await setup.stop()

    child = start_child(tmp_path, PUBLISHER, str(path), TOPIC, "60", "acked", "kill")
    assert await exit_code(child) == -signal.SIGKILL

    reopened = make_bus(path)
    await reopened.start()
    try:
        partitions = await read_all(reopened, TOPIC)
    finally:
        await reopened.stop()
    values = sorted(int(r.value.split(b":")[1]) for rs in partitions.values() for r in rs)
    assert values == list(range(60))
    for records in partitions.values():
        assert [r.offset for r in records] == list(range(len(records)))


async def test_publishers_in_several_processes_keep_offsets_dense(tmp_path: Path):
    # The children create the file and the topic themselves, racing each other.
    path = tmp_path / "log.db"
    children = [
        start_child(tmp_path, PUBLISHER, str(path), TOPIC, "150", f"p{n}", "exit") for n in range(3)
    ]
    assert [await exit_code(child) for child in children] == [0, 0, 0]

    reopened = make_bus(path)
    await reopened.start()
    try:
        partitions = await read_all(reopened, TOPIC)
        assert len(partitions) == AUTO_CREATE_PARTITIONS
    finally:
        await reopened.stop()
    values = [r.value.decode() for records in partitions.values() for r in records]
    assert sorted(values) == sorted(f"p{n}:{i}" for n in range(3) for i in range(150))
    for records in partitions.values():
        assert [r.offset for r in records] == list(range(len(records)))
        by_publisher: dict[str, list[int]] = defaultdict(list)
        for record in records:
            tag, sequence = record.value.decode().split(":")
            by_publisher[tag].append(int(sequence))
        assert all(seq == sorted(seq) for seq in by_publisher.values())
        assert len(by_publisher) > 1, "the publishers did not share a partition"


async def test_a_killed_consumer_is_replaced_from_the_committed_offsets(tmp_path: Path):
    path = tmp_path / "log.db"
    processed_log = tmp_path / "processed.txt"
    bus = make_bus(path)  # the child expires after 0.5 s; this member need not
    await bus.start()
    try:
        await bus.create_topic(TOPIC, 4)
        await bus.publish(keyed_records(2000, keys=20))
        ends = await bus.end_offsets([TOPIC])

        child = start_child(tmp_path, CONSUMER, str(path), TOPIC, "resume", str(processed_log))
        progress: dict[TopicPartition, int] = {}

        async def child_committed_some() -> bool:
            progress.update(await bus.committed("resume", [TOPIC]))
            return sum(progress.values()) >= 100

        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_SECONDS
        while not await child_committed_some():
            assert loop.time() < deadline, "the consumer child committed nothing"
            await asyncio.sleep(0.01)
        child.kill()
        assert await exit_code(child) == -signal.SIGKILL

        committed = await bus.committed("resume", [TOPIC])
        assert committed != ends, "the child finished before it was killed"
        by_child = {
            (TOPIC, int(p), int(o))
            for p, o in (line.split() for line in processed_log.read_text().splitlines())
        }
        for (topic, partition), next_offset in committed.items():
            assert {(topic, partition, o) for o in range(next_offset)} <= by_child

        successor = Collector()
        member = await bus.subscribe(group="resume", topics=[TOPIC], handler=successor)
        await wait_until(
            lambda: all(
                (TOPIC, p, end - 1) in successor.seen for (_, p), end in ends.items() if end
            ),
            "the successor reached the end of every partition",
        )
        await member.stop()
    finally:
        await bus.stop()

    for (topic, partition), end in ends.items():
        offsets = [r.offset for r in successor.records if r.partition == partition]
        start = committed.get((topic, partition), 0)
        assert offsets == list(range(start, end)), f"partition {partition} did not resume"
    everything = {(TOPIC, p, o) for (_, p), end in ends.items() for o in range(end)}
    assert by_child | successor.seen == everything


# -- the assignment --------------------------------------------------------------------------


@given(
    subscriptions=st.dictionaries(
        st.text("abcdef", min_size=1, max_size=4),
        st.frozensets(st.sampled_from(["t1", "t2", "t3"]), min_size=1),
        max_size=6,
    ),
    counts=st.fixed_dictionaries(
        {"t1": st.integers(1, 12), "t2": st.integers(1, 6), "t3": st.integers(1, 3)}
    ),
)
def test_assignment_deals_every_subscribed_partition_to_exactly_one_member(
    subscriptions: dict[str, frozenset[str]], counts: dict[str, int]
):
    assignment = assign_partitions(subscriptions, counts)
    reversed_order = dict(reversed(list(subscriptions.items())))
    assert assign_partitions(reversed_order, counts) == assignment

    owners: dict[TopicPartition, list[str]] = defaultdict(list)
    for member, owned in assignment.items():
        for topic, partition in owned:
            assert topic in subscriptions[member]
            owners[(topic, partition)].append(member)
    subscribed = {t for topics in subscriptions.values() for t in topics}
    assert set(owners) == {(t, p) for t in subscribed for p in range(counts[t])}
    assert all(len(members) == 1 for members in owners.values())
    if subscriptions and len(set(subscriptions.values())) == 1:
        sizes = [len(owned) for owned in assignment.values()]
        assert max(sizes) - min(sizes) <= 1
