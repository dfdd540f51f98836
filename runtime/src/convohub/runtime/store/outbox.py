"""The outbox relay: publishes committed outbox rows to the log, in `seq` order.

Rows are read in `seq` order, published with one `bus.publish` call per batch (which
returns after the log acknowledged), then marked published. Only one relay per database
publishes at a time, so order holds across replicas: on PostgreSQL the publisher holds a
session advisory lock (`pg_try_advisory_lock`; a relay that does not get it skips the
round); on SQLite the relay's transaction holds the write lock from reading to marking.

A crash between publish and marking publishes the same rows again, with the same event
ids (downstream recognises them). A row whose transaction never committed is never seen.
A row with a NULL value is a tombstone and goes out as a record with a null value.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from convohub.contracts import KafkaRecord
from convohub.runtime.bus.port import EventBus
from convohub.runtime.store.database import read_only
from convohub.runtime.store.statements import OUTBOX_RELAY_LOCK, outbox_lock_key, record_of
from convohub.runtime.store.tables import OUTBOX
from convohub.runtime.store.unit_of_work import ProjectionStore

log = structlog.get_logger(__name__)

_MAX_BACKOFF_SECONDS = 5.0


class OutboxRelay:
    """Publishes a projection database's outbox to the event bus.

    Given a `ProjectionStore`, a running relay wakes up as soon as a unit of work commits
    and writes in the store's turn; given only an engine, it polls every `poll_interval`
    seconds (it polls in any case, to see rows committed by other processes).
    """

    def __init__(
        self,
        store_or_engine: ProjectionStore | AsyncEngine,
        bus: EventBus,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.05,
        on_published: Callable[[Sequence[KafkaRecord]], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._store: ProjectionStore | None = None
        if isinstance(store_or_engine, ProjectionStore):
            self.engine = store_or_engine.engine
            self._store = store_or_engine
        else:
            self.engine = store_or_engine
        self._reader = read_only(self.engine)
        self.bus = bus
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.on_published = on_published
        """Called with each batch the log acknowledged (the published-events counter)."""
        self._wakeup = asyncio.Event()
        self._stopping = False

    def stop_after_round(self) -> None:
        """Ask `run` to return once its current round is over. Cancelling it instead could
        land between the log's acknowledgement and the commit of the marks, and the next
        drain would publish those rows a second time."""
        self._stopping = True
        self._wakeup.set()

    def wake(self) -> None:
        """Ask `run` to look for new rows now (call from the event loop's thread)."""
        self._wakeup.set()

    async def publish_pending(self) -> int:
        """Publish every committed, unpublished row in `seq` order; returns how many.

        Returns 0 at once on PostgreSQL when another relay is publishing. Raises when the
        bus raised; the rows of the failed batch stay unpublished and go out next time.
        """
        total = 0
        while True:
            if self.engine.dialect.name == "postgresql":
                published = await self._publish_batch_holding_advisory_lock()
            else:
                published = await self._publish_batch_holding_write_lock()
            total += published
            if published < self.batch_size:
                return total

    async def run(self) -> None:
        """Publish until `stop_after_round` (or cancelled): after every commit (wake-up)
        or poll interval.

        A failing round is logged and retried with capped exponential backoff.
        """
        if self._store is not None:
            self._store.on_commit(self.wake)
        try:
            await self._run()
        finally:
            if self._store is not None:
                self._store.remove_on_commit(self.wake)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            self._wakeup.clear()
            try:
                await self.publish_pending()
            except Exception:
                failures += 1
                delay = min(0.1 * 2 ** (failures - 1), _MAX_BACKOFF_SECONDS)
                log.exception("outbox publish failed", attempt=failures, retry_in=delay)
                await self._pause(delay)
                continue
            failures = 0
            await self._pause(self.poll_interval)

    async def _pause(self, seconds: float) -> None:
        """Sleep up to `seconds`, less when woken (a commit, or a stop request)."""
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=seconds)

    async def pending_count(self) -> int:
        """How many committed rows wait to be published (a queue-length metric)."""
        query = select(func.count()).select_from(OUTBOX).where(OUTBOX.c.published_at.is_(None))
        async with self._reader.connect() as connection:
            return int(await connection.scalar(query) or 0)

    async def purge_published(self, older_than: timedelta) -> int:
        """Delete rows published more than `older_than` ago; returns how many."""
        cutoff = datetime.now(UTC) - older_than
        statement = delete(OUTBOX).where(
            OUTBOX.c.published_at.is_not(None), OUTBOX.c.published_at <= cutoff
        )
        async with self._writer() as connection:
            result = await connection.execute(statement)
            return result.rowcount

    async def _publish_batch_holding_write_lock(self) -> int:
        # Most rounds find nothing: look without the write lock first, so an idle relay
        # never makes a projection's batch wait for the lock.
        if not await self._any_pending():
            return 0
        # SQLite: the transaction is BEGIN IMMEDIATE, so no other writer (relay or unit of
        # work) runs between reading and marking; a failed publish rolls back the marks.
        async with self._writer() as connection:
            seqs, records = await self._read_batch(connection)
            if seqs:
                await self.bus.publish(records)
                await self._mark_published(connection, seqs)
        if seqs:
            self._published(records)
        return len(seqs)

    async def _publish_batch_holding_advisory_lock(self) -> int:
        lock_key = outbox_lock_key(OUTBOX_RELAY_LOCK)
        async with self.engine.connect() as connection:
            locked = await connection.scalar(text(f"SELECT pg_try_advisory_lock({lock_key})"))
            await connection.commit()  # a session lock outlives the transaction
            if not locked:
                return 0
            try:
                seqs, records = await self._read_batch(connection)
                await connection.commit()
                if not seqs:
                    return 0
                await self.bus.publish(records)
                await self._mark_published(connection, seqs)
                await connection.commit()
                self._published(records)
                return len(seqs)
            finally:
                await _release_advisory_lock(connection, lock_key)

    def _writer(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction, in the store's turn when the relay was given the store."""
        return self._store.begin() if self._store is not None else self.engine.begin()

    def _published(self, records: Sequence[KafkaRecord]) -> None:
        if self.on_published is not None:
            try:
                self.on_published(records)
            except Exception:  # counting is best effort: the rows are published
                log.exception("on_published callback failed")

    async def _any_pending(self) -> bool:
        query = select(OUTBOX.c.seq).where(OUTBOX.c.published_at.is_(None)).limit(1)
        async with self._reader.connect() as connection:
            return await connection.scalar(query) is not None

    async def _read_batch(self, connection: AsyncConnection) -> tuple[list[int], list[KafkaRecord]]:
        query = (
            select(OUTBOX.c.seq, OUTBOX.c.topic, OUTBOX.c.key, OUTBOX.c.value, OUTBOX.c.headers)
            .where(OUTBOX.c.published_at.is_(None))
            .order_by(OUTBOX.c.seq)
            .limit(self.batch_size)
        )
        rows = (await connection.execute(query)).all()
        return [row.seq for row in rows], [record_of(row) for row in rows]

    @staticmethod
    async def _mark_published(connection: AsyncConnection, seqs: Sequence[int]) -> None:
        await connection.execute(
            update(OUTBOX).where(OUTBOX.c.seq.in_(seqs)).values(published_at=datetime.now(UTC))
        )


async def _release_advisory_lock(connection: AsyncConnection, lock_key: str) -> None:
    try:
        await connection.rollback()  # a failed statement may have left the transaction aborted
        await connection.execute(text(f"SELECT pg_advisory_unlock({lock_key})"))
        await connection.commit()
    except BaseException:
        # Closing the session is the other way to release a session lock; never return
        # a connection that still holds it to the pool.
        await connection.invalidate()
        raise
