"""The embedded log: Kafka's topic, partition, key and offset semantics in one SQLite file.

`EmbeddedBus` keeps the contract of `port.py` without a server: one SQLite file in WAL mode.
An append commits with `synchronous=FULL` before `publish` returns, so what the log
acknowledged survives `kill -9` (and power loss, as far as SQLite and the disk promise).
Several processes may share the file: every append holds SQLite's write lock from its first
read (`BEGIN IMMEDIATE`), so offsets stay dense, without gaps or duplicates.

Consumer groups work across processes without a coordinator:

- each member keeps a row in `group_members` saying when its session expires, and pushes
  that instant forward every `heartbeat_interval` from a background task (a slow handler
  keeps its partitions); `stop()` deletes the row, a killed process's row expires after
  `member_timeout`;
- the assignment is a pure function of the live members (`assign_partitions`), recomputed
  by every member on every poll, so all members agree once they read the same rows, and
  partitions move as soon as a member joins, leaves or expires;
- a commit recomputes the assignment inside its write transaction and only writes the
  partitions the member still owns (Kafka's generation fencing), so a member that lost a
  partition never moves the group's position under the new owner's feet.

Around a handover two members may both deliver a partition for up to one poll (the old
owner has not noticed yet): the duplicate the port allows, never a loss, because a member
starts a partition at the group's committed offset and only commits what it delivered.

A record with a null value is a tombstone (`KafkaRecord.value` None), kept and delivered
like any other; the embedded log never compacts, so every record of a key stays readable
and the latest one of an erased key is its tombstone, as on a compacted Kafka topic.

Records without a key go round-robin over the partitions. A topic unknown at publish is
created with `AUTO_CREATE_PARTITIONS` partitions (Kafka's `auto.create.topics.enable`);
the registry's topics are created, or grown, by `start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from convohub.contracts import TOPICS, KafkaRecord, Topic
from convohub.runtime.bus.partitioning import partition_for
from convohub.runtime.bus.port import (
    REDELIVERY_FIRST_BACKOFF,
    REDELIVERY_MAX_BACKOFF,
    BatchHandler,
    EventBus,
    LogRecord,
    Subscription,
    TopicPartition,
    UnknownTopicError,
    check_subscription,
)

log = structlog.get_logger(__name__)

AUTO_CREATE_PARTITIONS = 3
"""Partitions of a topic that is first seen by `publish` (not in the registry)."""

BUSY_TIMEOUT_MS = 30_000
SCHEMA_VERSION = 2
"""1: the first log; 2: `record_value` may be NULL (tombstones). A file of version 1 is
upgraded when a writer opens it."""

_T = TypeVar("_T")

# murmur2 is pure Python (tens of µs a key) and keys repeat (a conversation has many events).

_RECORDS_COLUMNS = """
    topic TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    record_offset INTEGER NOT NULL,
    record_key BLOB,
    record_value BLOB,
    headers TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition_id, record_offset)
"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL CHECK (partitions > 0)
);
CREATE TABLE IF NOT EXISTS records ({_RECORDS_COLUMNS});
CREATE TABLE IF NOT EXISTS group_offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_members (
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    topics TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, member_id)
) WITHOUT ROWID;
"""


def assign_partitions(
    members: Mapping[str, Collection[str]], partitions: Mapping[str, int]
) -> dict[str, frozenset[TopicPartition]]:
    """Which partitions each member of a group owns: the same answer in every process.

    `members` maps each live member id to the topics it subscribes to; `partitions` gives
    each topic's partition count (topics missing there have no partitions yet). Partitions,
    sorted by topic and number, are dealt round-robin over the sorted member ids, skipping
    members not subscribed to the topic (Kafka's RoundRobinAssignor).
    """
    member_ids = sorted(members)
    owned: dict[str, set[TopicPartition]] = {member_id: set() for member_id in member_ids}
    turn = 0
    for topic in sorted({topic for topics in members.values() for topic in topics}):
        for partition in range(partitions.get(topic, 0)):
            for step in range(len(member_ids)):
                candidate = member_ids[(turn + step) % len(member_ids)]
                if topic in members[candidate]:
                    owned[candidate].add((topic, partition))
                    turn = (turn + step + 1) % len(member_ids)
                    break
    return {member_id: frozenset(tps) for member_id, tps in owned.items()}


class EmbeddedBus(EventBus):
    """The event bus on a durable log in one SQLite file (see the module doc).

    Blocking SQLite calls run on two threads, each owning one connection: a writer
    (appends, commits, heartbeats; `synchronous=FULL`) and a query-only reader (polls and
    lookups), so a consumer's poll never waits behind a publisher's fsync.
    """

    def __init__(
        self,
        path: Path,
        *,
        topics: Sequence[Topic] = TOPICS,
        poll_interval: float = 0.05,
        member_timeout: float = 10.0,
        heartbeat_interval: float = 1.0,
    ) -> None:
        if poll_interval <= 0 or heartbeat_interval <= 0:
            raise ValueError("poll_interval and heartbeat_interval must be positive")
        if member_timeout <= heartbeat_interval:
            raise ValueError("member_timeout must exceed heartbeat_interval")
        self.path = Path(path)
        self.poll_interval = poll_interval
        self.member_timeout = member_timeout
        self.heartbeat_interval = heartbeat_interval
        self._registry = tuple(topics)
        self._writer: _SqliteThread | None = None
        self._reader: _SqliteThread | None = None
        self._lifecycle = asyncio.Lock()
        self._subscriptions: set[_EmbeddedSubscription] = set()
        self._round_robin: dict[str, int] = {}  # next partition of keyless records; writer only

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lifecycle:
            if self._writer is not None:
                return
            writer = _SqliteThread("convohub-log-writer")
            reader = _SqliteThread("convohub-log-reader")
            try:
                await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
                await writer.open(self.path, writer=True)
                await writer.call(_create_topics, [(t.name, t.partitions) for t in self._registry])
                await reader.open(self.path, writer=False)
            except BaseException:
                await reader.close()
                await writer.close()
                raise
            self._writer, self._reader = writer, reader

    async def stop(self) -> None:
        async with self._lifecycle:
            subscriptions = list(self._subscriptions)
            outcomes = await asyncio.gather(
                *(s.stop() for s in subscriptions), return_exceptions=True
            )
            for subscription, outcome in zip(subscriptions, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    log.warning(
                        "subscription did not stop cleanly",
                        group=subscription.group,
                        error=repr(outcome),
                    )
            writer, reader = self._writer, self._reader
            self._writer = self._reader = None
            if reader is not None:
                await reader.close()
            if writer is not None:
                await writer.close()

    def _require_writer(self) -> _SqliteThread:
        if self._writer is None:
            raise RuntimeError("EmbeddedBus is not started")
        return self._writer

    def _require_reader(self) -> _SqliteThread:
        if self._reader is None:
            raise RuntimeError("EmbeddedBus is not started")
        return self._reader

    # -- topics ------------------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int) -> None:
        """Create a topic, or grow it to `partitions` (idempotent; a topic never shrinks)."""
        await self._require_writer().call(_create_topics, [(name, partitions)])

    async def partitions(self, topic: str) -> int:
        return await self._require_reader().call(_partition_count, topic)

    # -- publish -----------------------------------------------------------------------------

    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        if not records:
            return
        await self._require_writer().call(self._append, list(records), _now_ms())
        for subscription in self._subscriptions:
            subscription.wake()

    def _append(
        self, connection: sqlite3.Connection, records: list[KafkaRecord], timestamp_ms: int
    ) -> None:
        """Append in one transaction (runs on the writer thread)."""
        with _write_transaction(connection):
            partition_counts: dict[str, int] = {}
            next_offsets: dict[TopicPartition, int] = {}
            rows = []
            for record in records:
                count = partition_counts.get(record.topic)
                if count is None:
                    count = partition_counts[record.topic] = _topic_for_append(
                        connection, record.topic
                    )
                partition = self._partition_of(record.topic, record.key, count)
                offset = next_offsets.get((record.topic, partition))
                if offset is None:
                    offset = _end_offset(connection, record.topic, partition)
                next_offsets[(record.topic, partition)] = offset + 1
                rows.append(
                    (
                        record.topic,
                        partition,
                        offset,
                        record.key,
                        record.value,
                        _encode_headers(record.headers),
                        timestamp_ms,
                    )
                )
            connection.executemany(
                "INSERT INTO records (topic, partition_id, record_offset, record_key,"
                " record_value, headers, timestamp_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def _partition_of(self, topic: str, key: bytes | None, partitions: int) -> int:
        if key is not None:
            return partition_for(key, partitions)
        turn = self._round_robin.get(topic, 0)
        self._round_robin[topic] = turn + 1
        return turn % partitions

    # -- consume -----------------------------------------------------------------------------

    async def subscribe(
        self,
        *,
        group: str,
        topics: Sequence[str],
        handler: BatchHandler,
        max_batch: int = 500,
    ) -> Subscription:
        check_subscription(topics, max_batch)
        subscription = _EmbeddedSubscription(
            self, group=group, topics=frozenset(topics), handler=handler, max_batch=max_batch
        )
        await subscription.join()
        self._subscriptions.add(subscription)
        return subscription

    # -- lookups -----------------------------------------------------------------------------

    async def end_offsets(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        return await self._require_reader().call(_end_offsets, list(topics))

    async def committed(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
        return await self._require_reader().call(_committed_offsets, group, list(topics))

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int = 500
    ) -> list[LogRecord]:
        if offset < 0 or max_records < 1:
            raise ValueError("offset must be >= 0 and max_records >= 1")
        return await self._require_reader().call(
            _read_checked, topic, partition, offset, max_records
        )


class _EmbeddedSubscription(Subscription):
    """One member of a consumer group: a poll loop and a heartbeat loop."""

    def __init__(
        self,
        bus: EmbeddedBus,
        *,
        group: str,
        topics: frozenset[str],
        handler: BatchHandler,
        max_batch: int,
    ) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self.member_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._handler = handler
        self._max_batch = max_batch
        self._assignment: frozenset[TopicPartition] = frozenset()
        self._positions: dict[TopicPartition, int] = {}  # next offset to deliver, owned only
        self._rotation = 0  # which owned partition a batch starts with, for fairness
        self._wake = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._leaving: asyncio.Future[None] | None = None

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    def wake(self) -> None:
        """Poll now rather than at the next interval (records were just appended)."""
        self._wake.set()

    async def join(self) -> None:
        self._assignment = await self._send_heartbeat()
        self._consumer = asyncio.create_task(self._consume(), name=f"consume {self.member_id}")
        self._heartbeat = asyncio.create_task(
            self._heartbeat_forever(), name=f"heartbeat {self.member_id}"
        )

    async def stop(self) -> None:
        if self._leaving is None:
            self._leaving = asyncio.ensure_future(self._leave())
        if asyncio.current_task() is self._consumer:
            return  # called by the handler: we leave once it returned and its batch committed
        await asyncio.shield(self._leaving)

    async def _leave(self) -> None:
        self._stop_requested.set()
        self._wake.set()
        tasks = [t for t in (self._consumer, self._heartbeat) if t is not None]
        try:
            await asyncio.gather(*tasks)
            writer = self.bus._writer
            if writer is not None:
                await writer.call(_delete_member, self.group, self.member_id)
        finally:
            self._assignment = frozenset()
            self.bus._subscriptions.discard(self)

    async def _send_heartbeat(self) -> frozenset[TopicPartition]:
        expires_ms = _now_ms() + int(self.bus.member_timeout * 1000)
        return await self.bus._require_writer().call(
            _heartbeat, self.group, self.member_id, sorted(self.topics), expires_ms, _now_ms()
        )

    async def _heartbeat_forever(self) -> None:
        while not self._stop_requested.is_set():
            await _wait(self._stop_requested, self.bus.heartbeat_interval)
            if self._stop_requested.is_set():
                return
            try:
                await self._send_heartbeat()
            except Exception as error:
                log.warning("heartbeat failed", group=self.group, error=repr(error))

    async def _consume(self) -> None:
        backoff = REDELIVERY_FIRST_BACKOFF
        while not self._stop_requested.is_set():
            self._wake.clear()
            try:
                batch = await self._poll()
            except Exception as error:
                log.warning("poll failed", group=self.group, error=repr(error))
                await _wait(self._stop_requested, self.bus.poll_interval)
                continue
            if not batch:
                await _wait(self._wake, self.bus.poll_interval)
                continue
            try:
                await self._handler(batch)
            except Exception as error:
                # Positions only move on commit, so the next poll rewinds to this batch.
                log.warning(
                    "handler failed, redelivering",
                    group=self.group,
                    backoff=backoff,
                    error=repr(error),
                )
                await _wait(self._stop_requested, backoff)
                backoff = min(backoff * 2, REDELIVERY_MAX_BACKOFF)
                continue
            backoff = REDELIVERY_FIRST_BACKOFF
            await self._commit(batch)

    async def _poll(self) -> list[LogRecord]:
        owned, positions, batch = await self.bus._require_reader().call(
            _poll,
            self.group,
            self.member_id,
            dict(self._positions),
            self._max_batch,
            self._rotation,
            _now_ms(),
        )
        self._assignment, self._positions = owned, positions
        self._rotation += 1
        return batch

    async def _commit(self, batch: Sequence[LogRecord]) -> None:
        next_offsets = {record.topic_partition: record.offset + 1 for record in batch}
        try:
            owned = await self.bus._require_writer().call(
                _commit_offsets, self.group, self.member_id, next_offsets, _now_ms()
            )
        except Exception as error:
            # Positions stay put, so the batch is delivered again: at least once holds.
            log.warning("commit failed, redelivering", group=self.group, error=repr(error))
            return
        positions = {tp: offset for tp, offset in self._positions.items() if tp in owned}
        positions.update({tp: end for tp, end in next_offsets.items() if tp in owned})
        self._assignment, self._positions = owned, positions


# -- the SQLite side (these functions run on a connection's own thread) ----------------------


class _SqliteThread:
    """One SQLite connection and the single thread that owns it.

    A sqlite3 connection must stay on one thread, and our transactions mix statements with
    Python; running each whole transaction as one call here keeps it atomic with respect to
    the coroutines sharing the connection (aiosqlite would hop threads per statement).
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connection: sqlite3.Connection | None = None

    async def open(self, path: Path, *, writer: bool) -> None:
        self._connection = await self._run(functools.partial(_connect, path, writer=writer))

    async def call(self, work: Callable[..., _T], *args: Any) -> _T:
        if self._connection is None:
            raise RuntimeError("the SQLite connection is closed")
        return await self._run(functools.partial(work, self._connection, *args))

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._run(connection.close)
        self._executor.shutdown(wait=True)

    async def _run(self, work: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)


def _connect(path: Path, *, writer: bool) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions, we issue BEGIN ourselves.
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if writer:
            _enable_wal(connection)
            connection.execute("PRAGMA synchronous = FULL")  # an ack survives power loss
            with _write_transaction(connection):
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"{path} has log schema version {version}; this code knows {SCHEMA_VERSION}"
                    )
                if version == 1:
                    _allow_null_values(connection)
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        else:
            connection.execute("PRAGMA query_only = ON")
    except BaseException:
        connection.close()
        raise
    return connection


def _allow_null_values(connection: sqlite3.Connection) -> None:
    """Upgrade a version-1 log: `record_value` loses NOT NULL (SQLite cannot drop a column
    constraint, so the table is rebuilt; rows and offsets are copied as they are)."""
    connection.execute(f"CREATE TABLE records_v2 ({_RECORDS_COLUMNS})")
    connection.execute("INSERT INTO records_v2 SELECT * FROM records")
    connection.execute("DROP TABLE records")
    connection.execute("ALTER TABLE records_v2 RENAME TO records")


def _enable_wal(connection: sqlite3.Connection) -> None:
    # Switching a fresh file to WAL needs an exclusive lock and may not wait on busy_timeout
    # when several processes create the file at once, so retry briefly.
    for _ in range(100):
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            time.sleep(0.05)
            continue
        if mode.lower() != "wal":
            raise RuntimeError(f"SQLite refused WAL mode (journal_mode={mode})")
        return
    raise RuntimeError("could not switch the embedded log to WAL mode: the file stays locked")


@contextlib.contextmanager
def _write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock before the first read, so two processes never compute
    # the same next offset.
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def _read_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN")  # one snapshot for every read inside
    try:
        yield
    finally:
        if connection.in_transaction:
            connection.execute("COMMIT")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    # latin-1 maps each byte to one code point, so any header value round-trips via JSON.
    return json.dumps([[name, value.decode("latin-1")] for name, value in headers])


def _decode_headers(text: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, value.encode("latin-1")) for name, value in json.loads(text))


def _create_topics(connection: sqlite3.Connection, topics: Sequence[tuple[str, int]]) -> None:
    with _write_transaction(connection):
        for name, partitions in topics:
            if partitions < 1:
                raise ValueError(f"topic {name!r} needs at least one partition")
            row = connection.execute(
                "SELECT partitions FROM topics WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                connection.execute(
                    "INSERT INTO topics (name, partitions) VALUES (?, ?)", (name, partitions)
                )
            elif row[0] < partitions:
                connection.execute(
                    "UPDATE topics SET partitions = ? WHERE name = ?", (partitions, name)
                )
            elif row[0] > partitions:
                raise ValueError(
                    f"topic {name!r} has {row[0]} partitions; a topic cannot shrink to {partitions}"
                )


def _topic_for_append(connection: sqlite3.Connection, topic: str) -> int:
    row = connection.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
    if row is not None:
        return int(row[0])
    connection.execute(
        "INSERT INTO topics (name, partitions) VALUES (?, ?)", (topic, AUTO_CREATE_PARTITIONS)
    )
    log.info("topic created on first publish", topic=topic, partitions=AUTO_CREATE_PARTITIONS)
    return AUTO_CREATE_PARTITIONS


def _partition_count(connection: sqlite3.Connection, topic: str) -> int:
    row = connection.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
    if row is None:
        raise UnknownTopicError(f"unknown topic {topic!r}")
    return int(row[0])


def _partition_counts(connection: sqlite3.Connection) -> dict[str, int]:
    return dict(connection.execute("SELECT name, partitions FROM topics").fetchall())


def _end_offset(connection: sqlite3.Connection, topic: str, partition: int) -> int:
    row = connection.execute(
        "SELECT record_offset FROM records WHERE topic = ? AND partition_id = ?"
        " ORDER BY record_offset DESC LIMIT 1",
        (topic, partition),
    ).fetchone()
    return 0 if row is None else int(row[0]) + 1


def _end_offsets(connection: sqlite3.Connection, topics: list[str]) -> dict[TopicPartition, int]:
    with _read_transaction(connection):
        return {
            (topic, partition): _end_offset(connection, topic, partition)
            for topic in topics
            for partition in range(_partition_count(connection, topic))
        }


def _committed_offsets(
    connection: sqlite3.Connection, group: str, topics: Collection[str]
) -> dict[TopicPartition, int]:
    for topic in topics:
        _partition_count(connection, topic)  # an unknown topic raises, as on Kafka
    rows = connection.execute(
        "SELECT topic, partition_id, next_offset FROM group_offsets WHERE group_id = ?",
        (group,),
    ).fetchall()
    return {(topic, partition): offset for topic, partition, offset in rows if topic in topics}


def _read(
    connection: sqlite3.Connection, topic: str, partition: int, offset: int, limit: int
) -> list[LogRecord]:
    rows = connection.execute(
        "SELECT record_offset, record_key, record_value, headers, timestamp_ms FROM records"
        " WHERE topic = ? AND partition_id = ? AND record_offset >= ?"
        " ORDER BY record_offset LIMIT ?",
        (topic, partition, offset, limit),
    ).fetchall()
    return [
        LogRecord(
            topic=topic,
            partition=partition,
            offset=record_offset,
            key=key,
            value=value,
            headers=_decode_headers(headers),
            timestamp_ms=timestamp_ms,
        )
        for record_offset, key, value, headers, timestamp_ms in rows
    ]


def _read_checked(
    connection: sqlite3.Connection, topic: str, partition: int, offset: int, limit: int
) -> list[LogRecord]:
    if not 0 <= partition < _partition_count(connection, topic):
        raise UnknownTopicError(f"topic {topic!r} has no partition {partition}")
    return _read(connection, topic, partition, offset, limit)


def _live_assignment(
    connection: sqlite3.Connection, group: str, member_id: str, now_ms: int
) -> frozenset[TopicPartition]:
    rows = connection.execute(
        "SELECT member_id, topics FROM group_members WHERE group_id = ? AND expires_ms > ?",
        (group, now_ms),
    ).fetchall()
    members = {member: frozenset(json.loads(topics)) for member, topics in rows}
    if member_id not in members:
        return frozenset()  # expired (or left): owns nothing until its next heartbeat
    return assign_partitions(members, _partition_counts(connection))[member_id]


def _heartbeat(
    connection: sqlite3.Connection,
    group: str,
    member_id: str,
    topics: list[str],
    expires_ms: int,
    now_ms: int,
) -> frozenset[TopicPartition]:
    with _write_transaction(connection):
        connection.execute(
            "INSERT INTO group_members (group_id, member_id, topics, expires_ms)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (group_id, member_id)"
            " DO UPDATE SET topics = excluded.topics, expires_ms = excluded.expires_ms",
            (group, member_id, json.dumps(topics), expires_ms),
        )
        # Housekeeping: rows of killed members would otherwise stay forever.
        connection.execute(
            "DELETE FROM group_members WHERE group_id = ? AND expires_ms <= ?", (group, now_ms)
        )
        return _live_assignment(connection, group, member_id, now_ms)


def _delete_member(connection: sqlite3.Connection, group: str, member_id: str) -> None:
    with _write_transaction(connection):
        connection.execute(
            "DELETE FROM group_members WHERE group_id = ? AND member_id = ?", (group, member_id)
        )


def _poll(
    connection: sqlite3.Connection,
    group: str,
    member_id: str,
    positions: dict[TopicPartition, int],
    max_batch: int,
    rotation: int,
    now_ms: int,
) -> tuple[frozenset[TopicPartition], dict[TopicPartition, int], list[LogRecord]]:
    """The member's assignment, its positions, and the next batch from them."""
    with _read_transaction(connection):
        owned = _live_assignment(connection, group, member_id, now_ms)
        kept = {tp: offset for tp, offset in positions.items() if tp in owned}
        acquired = owned - kept.keys()
        if acquired:
            # A partition new to this member starts at the group's committed offset.
            committed = _committed_offsets(connection, group, {topic for topic, _ in acquired})
            kept.update({tp: committed.get(tp, 0) for tp in acquired})
        order = sorted(owned)
        if order:
            start = rotation % len(order)
            order = order[start:] + order[:start]
        batch: list[LogRecord] = []
        for topic, partition in order:
            if len(batch) >= max_batch:
                break
            batch.extend(
                _read(
                    connection, topic, partition, kept[(topic, partition)], max_batch - len(batch)
                )
            )
    return owned, kept, batch


def _commit_offsets(
    connection: sqlite3.Connection,
    group: str,
    member_id: str,
    next_offsets: dict[TopicPartition, int],
    now_ms: int,
) -> frozenset[TopicPartition]:
    """Commit the partitions this member still owns; return what it owns."""
    with _write_transaction(connection):
        owned = _live_assignment(connection, group, member_id, now_ms)
        connection.executemany(
            "INSERT INTO group_offsets (group_id, topic, partition_id, next_offset)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (group_id, topic, partition_id)"
            " DO UPDATE SET next_offset = excluded.next_offset",
            [
                (group, topic, partition, offset)
                for (topic, partition), offset in next_offsets.items()
                if (topic, partition) in owned
            ],
        )
    return owned


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait until the event is set or `seconds` pass, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
