"""The projection store and its unit of work: one transaction per batch of events.

A handler's projection writes (through `UnitOfWork.connection`), the group's positions
(`advance`) and the events it emits (`emit`, outbox rows) commit together or not at all.
Positions and outbox rows are buffered and written at `commit` with one statement per
table (executemany), so a batch of hundreds of events costs a handful of round trips.

    async with store.unit_of_work() as uow:
        positions = await uow.lock_positions(group, batch_partitions)
        ...  # skip records below positions, apply the rest through uow.connection
        uow.advance(group, topic, partition, last_offset + 1)
        uow.emit(caused_by(event, payload, source=...))
        await uow.commit()

Leaving the block without `commit()`, or with an exception, rolls everything back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import structlog
from sqlalchemy import String, bindparam, delete, func, select, text, tuple_
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from convohub.contracts import Envelope, KafkaRecord, to_kafka_record, tombstone
from convohub.runtime.store.database import SQLITE_BUSY_TIMEOUT_MS, read_only
from convohub.runtime.store.statements import (
    OUTBOX_WRITE_LOCK,
    insert_missing_positions,
    insert_outbox_rows,
    insert_processed_events,
    insert_processed_events_unnested,
    outbox_lock_key,
    outbox_row,
    upsert_positions,
)
from convohub.runtime.store.tables import POSITIONS, PROCESSED_EVENTS
from convohub.runtime.telemetry import inject_traceparent

log = structlog.get_logger(__name__)

TopicPartition = tuple[str, int]


class ProjectionStore:
    """A service's projection database: units of work and the groups' positions.

    The runtime's tables must exist (`migrate_runtime`) before the first unit of work.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = read_only(engine)
        """The same pool for work that only reads (API queries, polls): on SQLite it takes
        no write lock, so it neither waits for nor delays a batch."""
        self._commit_callbacks: list[Callable[[], None]] = []
        self._write_turns = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @contextlib.asynccontextmanager
    async def write_turn(self) -> AsyncIterator[None]:
        """On SQLite, this process's write transactions on the store take turns, in the
        order they asked: SQLite's own busy handler would make a waiting writer sleep and
        retry (for up to 100 ms a try) instead. Other processes still meet the busy handler;
        on PostgreSQL this does nothing (row locks decide)."""
        if self._write_turns is None:
            yield
            return
        async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
            await self._write_turns.acquire()
        try:
            yield
        finally:
            self._write_turns.release()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction in this process's turn: use it, not `engine.begin()`, for
        every write outside a unit of work. On SQLite a writer that skipped the turn meets
        the busy handler instead, which under load made `convohub up`'s webhooks wait
        seconds (and up to 7 s) for `BEGIN IMMEDIATE` while its projections took turns."""
        async with self.write_turn(), self.engine.begin() as connection:
            yield connection

    def unit_of_work(self, *, replaying: bool = False) -> UnitOfWork:
        """A new unit of work (an async context manager). With `replaying=True` emitted
        events are dropped: a rebuild must not publish again what the live run published."""
        return UnitOfWork(self, replaying=replaying)

    async def positions(self, group: str) -> dict[TopicPartition, int]:
        """The group's stored next offset per partition (absent where none is stored)."""
        query = select(POSITIONS.c.topic, POSITIONS.c.partition, POSITIONS.c.next_offset).where(
            POSITIONS.c.consumer_group == group
        )
        async with self.reader.connect() as connection:
            rows = await connection.execute(query)
            return {(row.topic, row.partition): row.next_offset for row in rows}

    async def reset_positions(self, group: str) -> None:
        """Forget the group's positions (before a replay rebuilds its projection)."""
        async with self.begin() as connection:
            await connection.execute(delete(POSITIONS).where(POSITIONS.c.consumer_group == group))

    async def reset_group(self, group: str) -> None:
        """Forget all of the group's bookkeeping, positions and processed event ids (before
        a replay rebuilds its projection from the start of the log)."""
        async with self.begin() as connection:
            await connection.execute(delete(POSITIONS).where(POSITIONS.c.consumer_group == group))
            await connection.execute(
                delete(PROCESSED_EVENTS).where(PROCESSED_EVENTS.c.consumer_group == group)
            )

    async def forget_processed_before(self, moment: datetime) -> int:
        """Drop remembered event ids older than `moment` (re-publishes happen within
        minutes of the original, so a retention of days is plenty); returns how many."""
        query = delete(PROCESSED_EVENTS).where(PROCESSED_EVENTS.c.processed_at < moment)
        async with self.begin() as connection:
            return (await connection.execute(query)).rowcount

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every committed unit of work that wrote outbox rows (to
        wake the relay: a commit with nothing to publish, as most projection batches are,
        would send it for a lock and an empty read).

        It runs in the committing task and must not block; its errors are logged, not
        raised (the transaction is committed by then). Registering a callback twice has no
        further effect.
        """
        if callback not in self._commit_callbacks:
            self._commit_callbacks.append(callback)

    def remove_on_commit(self, callback: Callable[[], None]) -> None:
        """Stop calling `callback` after commits (no effect if it is not registered)."""
        with contextlib.suppress(ValueError):
            self._commit_callbacks.remove(callback)

    def _run_commit_callbacks(self) -> None:
        for callback in self._commit_callbacks:
            try:
                callback()
            except Exception:
                log.exception("on_commit callback failed", callback=repr(callback))


class UnitOfWork:
    """One database transaction holding projection writes, positions and outbox rows."""

    def __init__(self, store: ProjectionStore, *, replaying: bool = False) -> None:
        self.store = store
        self.replaying = replaying
        self._connection: AsyncConnection | None = None
        self._turn = contextlib.AsyncExitStack()
        self._transaction: AsyncTransaction | None = None
        self._committed = False
        self._positions: dict[tuple[str, str, int], int] = {}
        self._processed: dict[tuple[str, str], None] = {}  # (group, event id), in order
        self._outbox: dict[str, KafkaRecord] = {}  # event id -> record, in emit order

    async def __aenter__(self) -> Self:
        if self._connection is not None or self._committed:
            raise RuntimeError("a unit of work is used once")
        turn = contextlib.AsyncExitStack()
        await turn.enter_async_context(self.store.write_turn())
        try:
            connection = await self.store.engine.connect()
            try:
                # On SQLite this is BEGIN IMMEDIATE: the write lock is ours from here on.
                self._transaction = await connection.begin()
            except BaseException:
                await connection.close()
                raise
        except BaseException:
            await turn.aclose()
            raise
        self._connection, self._turn = connection, turn
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if self._transaction is not None and self._transaction.is_active:
                await self._transaction.rollback()
        finally:
            try:
                await connection.close()
            finally:
                await self._turn.aclose()

    @property
    def connection(self) -> AsyncConnection:
        """The transaction's connection; the handler's projection writes go through it."""
        if self._connection is None or self._committed:
            raise RuntimeError("the unit of work is not open (use `async with`)")
        return self._connection

    async def lock_positions(
        self, group: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The stored next offset of each of the partitions (0 where none was stored yet),
        locked until this transaction ends, so a concurrent unit of work on the same
        partitions waits and then sees what this one committed."""
        wanted = sorted(set(partitions))  # one lock order for everyone: no deadlocks
        if not wanted:
            return {}
        connection = self.connection
        # Insert missing rows first so the row lock below also covers partitions that
        # have no position yet (PostgreSQL); on SQLite the write lock already serialises.
        await connection.execute(
            insert_missing_positions(connection.dialect),
            [
                {"consumer_group": group, "topic": topic, "partition": partition, "next_offset": 0}
                for topic, partition in wanted
            ],
        )
        query = (
            select(POSITIONS.c.topic, POSITIONS.c.partition, POSITIONS.c.next_offset)
            .where(
                POSITIONS.c.consumer_group == group,
                tuple_(POSITIONS.c.topic, POSITIONS.c.partition).in_(wanted),
            )
            .order_by(POSITIONS.c.topic, POSITIONS.c.partition)
        )
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        rows = await connection.execute(query)
        return {(row.topic, row.partition): row.next_offset for row in rows}

    def advance(self, group: str, topic: str, partition: int, next_offset: int) -> None:
        """Store `next_offset` as the group's position on the partition at commit (a
        position never moves backwards)."""
        key = (group, topic, partition)
        self._positions[key] = max(next_offset, self._positions.get(key, next_offset))

    async def already_processed(self, group: str, event_ids: Collection[str]) -> set[str]:
        """Those of `event_ids` the group applied before (a re-published event)."""
        if not event_ids:
            return set()
        ids = sorted(set(event_ids))
        if self.connection.dialect.name == "postgresql":
            # Join an unnested array parameter: `event_id IN (500 parameters)` or `= ANY`
            # can be planned as a scan comparing every stored id with every wanted one.
            wanted = (
                func.unnest(bindparam("ids", ids, type_=postgresql.ARRAY(String(255))))
                .table_valued("id")
                .render_derived(name="wanted")
            )
            query = (
                select(PROCESSED_EVENTS.c.event_id)
                .join(wanted, PROCESSED_EVENTS.c.event_id == wanted.c.id)
                .where(PROCESSED_EVENTS.c.consumer_group == group)
            )
        else:
            query = select(PROCESSED_EVENTS.c.event_id).where(
                PROCESSED_EVENTS.c.consumer_group == group, PROCESSED_EVENTS.c.event_id.in_(ids)
            )
        return set((await self.connection.execute(query)).scalars())

    def remember_processed(self, group: str, event_ids: Iterable[str]) -> None:
        """Record at commit that the group applied these events."""
        for event_id in event_ids:
            self._processed[(group, event_id)] = None

    def emit(self, event: Envelope[Any], *, traceparent: str | None = None) -> None:
        """Publish `event` once this transaction commits (through the outbox).

        The event is validated and bound to its topic now. An event id already in the
        outbox is ignored: a handler re-run after a crash emits the same ids. Dropped
        when replaying. Without `traceparent` the event carries the current span's (an
        HTTP request's: an agent's reply is part of that request's trace), if any.
        """
        if self.replaying:
            return
        if traceparent is None:
            traceparent = inject_traceparent()
        self._outbox.setdefault(event.id, to_kafka_record(event, traceparent=traceparent))

    def emit_tombstone(
        self, topic: str, key: str, *, tombstone_id: str, traceparent: str | None = None
    ) -> None:
        """Publish a tombstone of `key` on the compacted `topic` (a record with a null
        value: compaction then deletes the key's earlier records) once this transaction
        commits, after the events emitted before it. `tombstone_id` identifies it in the
        outbox (derive it from the cause, so a re-run emits it once). Dropped when
        replaying."""
        if self.replaying:
            return
        self._outbox.setdefault(tombstone_id, tombstone(topic, key, traceparent=traceparent))

    def emit_record(self, record: KafkaRecord, *, event_id: str) -> None:
        """Publish a raw record once this transaction commits (the dead-letter path);
        `event_id` identifies it in the outbox. Dropped when replaying."""
        if self.replaying:
            return
        self._outbox.setdefault(event_id, record)

    async def commit(self) -> None:
        """Write the positions and outbox rows, commit, then run the on-commit callbacks."""
        connection = self.connection
        if self._transaction is None or not self._transaction.is_active:
            raise RuntimeError("the transaction was already ended")
        if self._positions:
            await connection.execute(
                upsert_positions(connection.dialect),
                [
                    {"consumer_group": g, "topic": t, "partition": p, "next_offset": offset}
                    for (g, t, p), offset in self._positions.items()
                ],
            )
        if self._processed:
            rows = [
                {"consumer_group": g, "event_id": e, "processed_at": datetime.now(UTC)}
                for g, e in self._processed
            ]
            if connection.dialect.name == "postgresql":
                await connection.execute(insert_processed_events_unnested(rows))
            else:
                await connection.execute(insert_processed_events(connection.dialect), rows)
        if self._outbox:
            if connection.dialect.name == "postgresql":
                # Serialise outbox inserts until commit, so seq order is commit order and
                # the relay never publishes seq N+1 while N is still to come.
                await connection.execute(
                    text(f"SELECT pg_advisory_xact_lock({outbox_lock_key(OUTBOX_WRITE_LOCK)})")
                )
            now = datetime.now(UTC)
            await connection.execute(
                insert_outbox_rows(connection.dialect),
                [outbox_row(event_id, record, now) for event_id, record in self._outbox.items()],
            )
        await self._transaction.commit()
        self._committed = True
        if self._outbox:
            self.store._run_commit_callbacks()
