"""The projection store: migrations, the unit of work, positions and the outbox rows.

Every scenario runs on SQLite (a file under tmp_path) and on the real PostgreSQL from
`DATABASE_URL` (`eval "$(scripts/infra/infra env)"`), each test in a database of its own.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, String, Table, event, func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

import convohub.runtime.store.migrations
from convohub.contracts import Envelope, KafkaRecord
from convohub.contracts.catalogue import example_event
from convohub.runtime.store import (
    OUTBOX,
    POSITIONS,
    RUNTIME_METADATA,
    RUNTIME_MIGRATIONS,
    RUNTIME_VERSION_TABLE,
    ProjectionStore,
    create_engine,
    migrate,
    migrate_runtime,
)
from convohub.runtime.store.migrate import _CONNECTION, _VERSION_TABLE

# A projection table of a pretend service, written through `uow.connection`.
DEMO_METADATA = MetaData()
DEMO_COUNTS = Table(
    "demo_counts",
    DEMO_METADATA,
    Column("name", String(50), primary_key=True),
    Column("count", Integer, nullable=False),
)

GROUP = "demo-projection"
TOPIC = "convohub.conversation.v1"


def event_with_id(event_id: str) -> Envelope[Any]:
    return example_event("convohub.conversation.closed.v1").model_copy(update={"id": event_id})


class Boom(Exception):
    pass


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(store_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(engine: AsyncEngine) -> ProjectionStore:
    await migrate_runtime(engine)
    async with engine.begin() as connection:
        await connection.run_sync(DEMO_METADATA.create_all)
    return ProjectionStore(engine)


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def version_of(engine: AsyncEngine, version_table: str) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text(f"SELECT version_num FROM {version_table}"))
        return [row.version_num for row in rows]


async def outbox_ids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(OUTBOX.c.event_id).order_by(OUTBOX.c.seq))
        return [row.event_id for row in rows]


async def demo_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as connection:
        return {row.name: row.count for row in await connection.execute(select(DEMO_COUNTS))}


# -- migrations --------------------------------------------------------------------------------


async def test_migrations_create_the_runtime_tables_from_nothing(engine: AsyncEngine) -> None:
    assert await table_names(engine) == set()

    await migrate_runtime(engine)

    assert await table_names(engine) == {
        "convohub_positions",
        "convohub_processed_events",
        "convohub_outbox",
        RUNTIME_VERSION_TABLE,
    }
    assert await version_of(engine, RUNTIME_VERSION_TABLE) == ["0003"]


async def test_migrating_twice_is_a_no_op(engine: AsyncEngine) -> None:
    await migrate_runtime(engine)
    async with engine.begin() as connection:
        await connection.execute(
            POSITIONS.insert().values(consumer_group=GROUP, topic=TOPIC, partition=0, next_offset=7)
        )

    await migrate_runtime(engine)

    assert await version_of(engine, RUNTIME_VERSION_TABLE) == ["0003"]
    assert await ProjectionStore(engine).positions(GROUP) == {(TOPIC, 0): 7}


async def test_the_migrated_schema_matches_the_table_definitions(engine: AsyncEngine) -> None:
    await migrate_runtime(engine)

    def differences(sync_connection: Any) -> list[Any]:
        context = MigrationContext.configure(
            sync_connection, opts={"version_table": RUNTIME_VERSION_TABLE}
        )
        return compare_metadata(context, RUNTIME_METADATA)

    async with engine.connect() as connection:
        assert await connection.run_sync(differences) == []


def _upgrade_runtime_to(sync_connection: Any, revision: str) -> None:
    """What `migrate_runtime` does, but stopping at `revision` (an older installation)."""
    config = Config()
    config.set_main_option("script_location", str(RUNTIME_MIGRATIONS))
    config.attributes[_CONNECTION] = sync_connection
    config.attributes[_VERSION_TABLE] = RUNTIME_VERSION_TABLE
    command.upgrade(config, revision)


async def test_an_outbox_of_revision_0002_upgrades_to_hold_tombstones(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade_runtime_to, "0002")
    rows = [
        {"event_id": f"e{n}", "topic": TOPIC, "key": b"k", "value": f"v{n}".encode()}
        for n in range(3)
    ]
    async with engine.begin() as connection:
        for row in rows:
            await connection.execute(
                text(
                    "INSERT INTO convohub_outbox (event_id, topic, key, value, headers,"
                    " created_at) VALUES (:event_id, :topic, :key, :value, '[]', :created_at)"
                ),
                {**row, "created_at": datetime.now(UTC)},
            )
        # The newest row was published and purged: its seq must never come back.
        await connection.execute(text("DELETE FROM convohub_outbox WHERE event_id = 'e2'"))
        with pytest.raises(IntegrityError):
            async with connection.begin_nested():
                await connection.execute(
                    text(
                        "INSERT INTO convohub_outbox (event_id, topic, value, headers,"
                        " created_at) VALUES ('t', :topic, NULL, '[]', :created_at)"
                    ),
                    {"topic": TOPIC, "created_at": datetime.now(UTC)},
                )

    await migrate_runtime(engine)

    assert await version_of(engine, RUNTIME_VERSION_TABLE) == ["0003"]
    async with engine.connect() as connection:
        kept = (
            await connection.execute(select(OUTBOX.c.seq, OUTBOX.c.value).order_by(OUTBOX.c.seq))
        ).all()
    assert [row.value for row in kept] == [b"v0", b"v1"]
    store = ProjectionStore(engine)
    async with store.unit_of_work() as uow:
        uow.emit_tombstone("convohub.customer-profile.v1", "cust-1", tombstone_id="t-1")
        await uow.commit()
    async with engine.connect() as connection:
        tombstone = (
            await connection.execute(select(OUTBOX).where(OUTBOX.c.event_id == "t-1"))
        ).one()
    assert tombstone.value is None
    assert tombstone.key == b"cust-1"
    assert tombstone.seq > kept[-1].seq + 1, "a purged seq was handed out again"
    async with engine.connect() as connection:
        assert await connection.run_sync(_schema_differences) == []


def _schema_differences(sync_connection: Any) -> list[Any]:
    context = MigrationContext.configure(
        sync_connection, opts={"version_table": RUNTIME_VERSION_TABLE}
    )
    return compare_metadata(context, RUNTIME_METADATA)


DEMO_ENV = """\
from convohub.runtime.store.migrate import run_migrations_in_env

run_migrations_in_env()
"""

DEMO_REVISION = """\
import sqlalchemy as sa
from alembic import op

revision = "demo1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("demo_things", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("demo_things")
"""


async def test_a_service_history_keeps_its_own_version_table(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    history = tmp_path / "demo_migrations"
    (history / "versions").mkdir(parents=True)
    (history / "env.py").write_text(DEMO_ENV)
    (history / "versions" / "demo1_things.py").write_text(DEMO_REVISION)

    await migrate_runtime(engine)
    await migrate(engine, history, "demo_alembic_version")
    await migrate_runtime(engine)
    await migrate(engine, history, "demo_alembic_version")

    assert {"demo_things", "demo_alembic_version", RUNTIME_VERSION_TABLE} <= await table_names(
        engine
    )
    assert await version_of(engine, RUNTIME_VERSION_TABLE) == ["0003"]
    assert await version_of(engine, "demo_alembic_version") == ["demo1"]


def test_the_runtime_history_ships_inside_the_package() -> None:
    package_dir = Path(convohub.runtime.store.migrations.__file__).parent
    assert package_dir == RUNTIME_MIGRATIONS
    assert (RUNTIME_MIGRATIONS / "env.py").is_file()
    assert list((RUNTIME_MIGRATIONS / "versions").glob("0001_*.py"))


# -- the unit of work --------------------------------------------------------------------------


async def test_a_unit_of_work_commits_writes_positions_and_outbox_rows_together(
    store: ProjectionStore,
) -> None:
    async with store.unit_of_work() as uow:
        assert await uow.lock_positions(GROUP, [(TOPIC, 3)]) == {(TOPIC, 3): 0}
        await uow.connection.execute(DEMO_COUNTS.insert().values(name="closed", count=1))
        uow.advance(GROUP, TOPIC, 3, 11)
        uow.emit(event_with_id("evt-1"))
        await uow.commit()

    assert await demo_counts(store.engine) == {"closed": 1}
    assert await store.positions(GROUP) == {(TOPIC, 3): 11}
    assert await outbox_ids(store.engine) == ["evt-1"]


async def write_everything(store: ProjectionStore, *, then_raise: bool, commit: bool) -> None:
    async with store.unit_of_work() as uow:
        await uow.lock_positions(GROUP, [(TOPIC, 0), (TOPIC, 1)])
        await uow.connection.execute(DEMO_COUNTS.update().values(count=DEMO_COUNTS.c.count + 1))
        uow.advance(GROUP, TOPIC, 0, 9)
        uow.emit(event_with_id("evt-2"))
        if then_raise:
            raise Boom
        if commit:
            await uow.commit()


@pytest.mark.parametrize("failure", ["exception", "no commit"])
async def test_a_unit_of_work_that_fails_leaves_no_trace(
    store: ProjectionStore, failure: str
) -> None:
    async with store.unit_of_work() as uow:
        await uow.connection.execute(DEMO_COUNTS.insert().values(name="closed", count=1))
        uow.advance(GROUP, TOPIC, 0, 5)
        uow.emit(event_with_id("evt-1"))
        await uow.commit()

    if failure == "exception":
        with pytest.raises(Boom):
            await write_everything(store, then_raise=True, commit=True)
    else:
        await write_everything(store, then_raise=False, commit=False)

    assert await demo_counts(store.engine) == {"closed": 1}
    assert await store.positions(GROUP) == {(TOPIC, 0): 5}
    assert await outbox_ids(store.engine) == ["evt-1"]

    await write_everything(store, then_raise=False, commit=True)  # the same, committed
    assert await demo_counts(store.engine) == {"closed": 2}
    assert await store.positions(GROUP) == {(TOPIC, 0): 9, (TOPIC, 1): 0}
    assert await outbox_ids(store.engine) == ["evt-1", "evt-2"]


async def test_a_committed_unit_of_work_cannot_be_used_again(store: ProjectionStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.commit()
        with pytest.raises(RuntimeError):
            await uow.commit()
        with pytest.raises(RuntimeError):
            _ = uow.connection


async def test_a_position_never_moves_backwards(store: ProjectionStore) -> None:
    async with store.unit_of_work() as uow:
        uow.advance(GROUP, TOPIC, 0, 10)
        uow.advance(GROUP, TOPIC, 0, 4)
        await uow.commit()
    async with store.unit_of_work() as uow:
        uow.advance(GROUP, TOPIC, 0, 7)
        uow.advance(GROUP, TOPIC, 1, 2)
        await uow.commit()

    assert await store.positions(GROUP) == {(TOPIC, 0): 10, (TOPIC, 1): 2}
    assert await store.positions("another-group") == {}


async def test_reset_positions_forgets_one_group_only(store: ProjectionStore) -> None:
    async with store.unit_of_work() as uow:
        uow.advance(GROUP, TOPIC, 0, 10)
        uow.advance("another-group", TOPIC, 0, 3)
        await uow.commit()

    await store.reset_positions(GROUP)

    assert await store.positions(GROUP) == {}
    assert await store.positions("another-group") == {(TOPIC, 0): 3}
    async with store.unit_of_work() as uow:
        assert await uow.lock_positions(GROUP, [(TOPIC, 0)]) == {(TOPIC, 0): 0}


async def test_concurrent_units_of_work_on_one_partition_serialise(
    store: ProjectionStore,
) -> None:
    """Each worker reads the position and advances it by one: a lost update or a
    "database is locked" error would show."""

    async def increment() -> None:
        async with store.unit_of_work() as uow:
            positions = await uow.lock_positions(GROUP, [(TOPIC, 0)])
            uow.advance(GROUP, TOPIC, 0, positions[(TOPIC, 0)] + 1)
            await uow.commit()

    await asyncio.gather(*(increment() for _ in range(12)))

    assert await store.positions(GROUP) == {(TOPIC, 0): 12}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_sqlite_writers_take_the_write_lock_at_begin(store: ProjectionStore) -> None:
    """A read-then-write transaction would fail with "database is locked" (or lose an
    update) if the write lock were taken at the first write instead of at BEGIN."""
    async with store.unit_of_work() as uow:
        await uow.connection.execute(DEMO_COUNTS.insert().values(name="closed", count=0))
        await uow.commit()

    async def increment() -> None:
        async with store.unit_of_work() as uow:
            count = await uow.connection.scalar(select(DEMO_COUNTS.c.count))
            await asyncio.sleep(0)  # let the others read too, were they able to
            await uow.connection.execute(DEMO_COUNTS.update().values(count=count + 1))
            await uow.commit()

    await asyncio.gather(*(increment() for _ in range(8)))

    assert await demo_counts(store.engine) == {"closed": 8}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_sqlite_writers_of_one_process_take_turns_in_the_order_they_asked(
    store: ProjectionStore,
) -> None:
    """Writers queue on the store's turn rather than in SQLite's busy handler, whose
    sleep-and-retry lets a late writer overtake one that has waited longer: units of work
    and plain write transactions (`store.begin()`) alike."""
    order: list[int] = []
    holder = store.unit_of_work()
    await holder.__aenter__()

    async def write(n: int) -> None:
        row = DEMO_COUNTS.insert().values(name=f"w{n}", count=n)
        if n % 2:
            async with store.begin() as connection:
                await connection.execute(row)
                order.append(n)
            return
        async with store.unit_of_work() as uow:
            await uow.connection.execute(row)
            order.append(n)
            await uow.commit()

    waiters = []
    for n in range(6):
        waiters.append(asyncio.create_task(write(n)))
        await asyncio.sleep(0.03)  # each asks after the one before has started waiting
    await holder.__aexit__(None, None, None)
    await asyncio.gather(*waiters)
    assert order == list(range(6))


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_a_writer_waits_for_another_process_lock_without_blocking_the_event_loop(
    store: ProjectionStore, store_url: str
) -> None:
    """SQLite statements run on the event loop's thread, but a `BEGIN IMMEDIATE` that finds
    another process's write lock waits on the connection's own thread: the loop keeps
    serving other work meanwhile, and the write goes through once the lock is free."""
    other = sqlite3.connect(store_url.split("///", 1)[1], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process (a CLI command, say) is writing
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def write() -> None:
        async with store.unit_of_work() as uow:
            await uow.connection.execute(DEMO_COUNTS.insert().values(name="late", count=1))
            await uow.commit()

    ticking = asyncio.create_task(ticker())
    writing = asyncio.create_task(write())
    await asyncio.sleep(0.5)
    assert not writing.done()  # waiting for the lock...
    assert ticks >= 20  # ...while the loop ran the ticker (a blocked loop ticks 0 times)
    other.execute("COMMIT")
    await asyncio.wait_for(writing, timeout=10)
    ticking.cancel()
    other.close()
    assert await demo_counts(store.engine) == {"late": 1}


async def test_readers_neither_wait_for_nor_block_a_writer(store: ProjectionStore) -> None:
    """An API read or a poll while a batch holds the write lock answers at once with the
    last committed state, and a writer is not kept waiting by an open read."""
    async with store.unit_of_work() as uow:
        await uow.connection.execute(DEMO_COUNTS.insert().values(name="closed", count=1))
        await uow.commit()
    count = select(DEMO_COUNTS.c.count)
    async with store.unit_of_work() as batch:  # holds the write lock (BEGIN IMMEDIATE on SQLite)
        await batch.connection.execute(DEMO_COUNTS.update().values(count=2))
        async with store.reader.connect() as reader:
            assert await asyncio.wait_for(reader.scalar(count), timeout=5) == 1
        await batch.commit()
    async with store.reader.connect() as reader:
        assert await reader.scalar(count) == 2  # an open read transaction...
        async with store.unit_of_work() as writer:  # ...does not hold a writer back
            await asyncio.wait_for(
                writer.connection.execute(DEMO_COUNTS.update().values(count=3)), timeout=5
            )
            await writer.commit()
    assert await demo_counts(store.engine) == {"closed": 3}


@pytest.mark.integration
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_lock_positions_makes_a_redelivery_wait_for_the_first_commit(
    store: ProjectionStore,
) -> None:
    """PostgreSQL: a second unit of work on the same partition waits on the row lock and
    then sees the first one's position, so it skips the redelivered record."""
    async with store.unit_of_work() as first:
        assert await first.lock_positions(GROUP, [(TOPIC, 0)]) == {(TOPIC, 0): 0}

        async def second() -> dict[tuple[str, int], int]:
            async with store.unit_of_work() as uow:
                return await uow.lock_positions(GROUP, [(TOPIC, 0)])

        waiting = asyncio.create_task(second())
        await wait_for_a_lock_wait(store.engine, waiting)
        first.advance(GROUP, TOPIC, 0, 1)
        await first.commit()

    assert await asyncio.wait_for(waiting, timeout=10) == {(TOPIC, 0): 1}


async def wait_for_a_lock_wait(engine: AsyncEngine, task: asyncio.Task[Any]) -> None:
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with engine.connect() as connection:
        for _ in range(500):
            assert not task.done(), f"the second unit of work did not wait: {task.result()}"
            if await connection.scalar(query):
                return
            await connection.rollback()  # a fresh snapshot of pg_stat_activity
            await asyncio.sleep(0.01)
    raise AssertionError("the second unit of work never waited for the row lock")


async def test_re_emitting_an_event_id_is_ignored(store: ProjectionStore) -> None:
    async with store.unit_of_work() as uow:
        uow.emit(event_with_id("evt-1"))
        uow.emit(event_with_id("evt-1"))
        uow.emit(event_with_id("evt-2"))
        await uow.commit()
    async with store.unit_of_work() as uow:  # the handler ran again after a crash
        uow.emit(event_with_id("evt-2"))
        uow.emit(event_with_id("evt-1"))
        uow.emit(event_with_id("evt-3"))
        await uow.commit()

    assert await outbox_ids(store.engine) == ["evt-1", "evt-2", "evt-3"]


async def test_replaying_drops_emitted_events_but_keeps_writes_and_positions(
    store: ProjectionStore,
) -> None:
    async with store.unit_of_work(replaying=True) as uow:
        await uow.connection.execute(DEMO_COUNTS.insert().values(name="closed", count=1))
        uow.advance(GROUP, TOPIC, 0, 1)
        uow.emit(event_with_id("evt-1"))
        uow.emit_record(KafkaRecord("convohub.dlq.v1", b"k", b"v", ()), event_id="dlq-1")
        await uow.commit()

    assert await demo_counts(store.engine) == {"closed": 1}
    assert await store.positions(GROUP) == {(TOPIC, 0): 1}
    assert await outbox_ids(store.engine) == []


async def emit_then_fail(store: ProjectionStore, event_id: str) -> None:
    async with store.unit_of_work() as uow:
        uow.emit(event_with_id(event_id))
        raise Boom


async def test_on_commit_callbacks_run_after_commits_only(store: ProjectionStore) -> None:
    calls: list[str] = []
    store.on_commit(lambda: calls.append("committed"))
    store.on_commit(lambda: 1 / 0)  # a failing callback neither fails the commit nor others
    store.on_commit(lambda: calls.append("also"))

    with pytest.raises(Boom):
        await emit_then_fail(store, "evt-1")
    assert calls == []

    async with store.unit_of_work() as uow:
        uow.emit(event_with_id("evt-1"))
        await uow.commit()
    assert calls == ["committed", "also"]


async def test_a_batch_writes_each_table_with_one_statement(store: ProjectionStore) -> None:
    statements: list[tuple[str, bool]] = []

    def record(_conn: Any, _cursor: Any, statement: str, _params: Any, _ctx: Any, many: bool):
        statements.append((statement, many))

    async with store.unit_of_work() as uow:
        partitions = [(f"topic-{n // 10}", n % 10) for n in range(1000)]
        await uow.lock_positions(GROUP, partitions)
        for n, (topic, partition) in enumerate(partitions):
            uow.advance(GROUP, topic, partition, n + 1)
            uow.emit(event_with_id(f"evt-{n}"))
        event.listen(store.engine.sync_engine, "before_cursor_execute", record)
        try:
            await uow.commit()
        finally:
            event.remove(store.engine.sync_engine, "before_cursor_execute", record)

    position_writes = [s for s in statements if "INTO convohub_positions" in s[0]]
    outbox_writes = [s for s in statements if "INTO convohub_outbox" in s[0]]
    assert len(position_writes) == 1, position_writes
    assert len(outbox_writes) == 1, outbox_writes
    assert len(statements) <= 4, statements  # + the outbox write lock on PostgreSQL, + COMMIT
    assert len(await store.positions(GROUP)) == 1000
    async with store.engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(OUTBOX)) == 1000
