"""The delivery guarantees, written once and run on both backends.

- order per key; a consumer group of two splits the partitions; a member leaving hands
  its partitions over without loss;
- a consumer process killed with SIGKILL at random points (10 runs) and restarted: every
  event applied exactly once, and every event it emitted published and applied once
  downstream;
- a crash between the database commit and the outbox publish: every committed event is
  published, downstream applies it once, nothing uncommitted is ever published;
- a poison event lands in the DLQ after the retries and the events behind it on the same
  partition are processed; a redrive after the fix applies it once;
- a replayed projection equals the live one.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from convohub.contracts import KafkaRecord
from convohub.contracts.topics import CONVERSATION, ROUTING
from convohub.runtime.bus.port import EventBus
from convohub.runtime.consumer import ProjectionRunner, RetryPolicy
from convohub.runtime.deadletters import list_dead_letters, redrive
from convohub.runtime.projection import Projection
from convohub.runtime.replay import replay
from convohub.runtime.store import OUTBOX, OutboxRelay, ProjectionStore

from .backends import Backend, EmbeddedBackend, KafkaPostgresBackend
from .projections import POISON, ClassifiedLedger, MessageLedger, message

REPO_DIR = Path(__file__).resolve().parents[2]
CHILD_MODULE = "tests.scenarios.consumer_child"
FAST_RETRY = RetryPolicy(attempts=3, first_backoff=0.01, max_backoff=0.05)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 60.0) -> None:
    """Wait until `check()` holds, failing with `what` after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


def messages(keys: int, per_key: int, start: int = 0) -> list[Any]:
    """`per_key` messages for each of `keys` conversations, interleaved across keys."""
    return [message(f"conv-{k}", seq) for seq in range(start, start + per_key) for k in range(keys)]


async def applications(store: ProjectionStore, ledger: MessageLedger | ClassifiedLedger) -> dict:
    async with store.engine.connect() as connection:
        return await ledger.applications(connection)


P = TypeVar("P", bound=Projection)


async def projection_setup(backend: Backend, projection: P, store_name: str) -> tuple[P, Any]:
    """The projection and a migrated store holding its tables."""
    store = await backend.store(store_name)
    async with store.engine.begin() as connection:
        await connection.run_sync(projection.metadata.create_all)
    return projection, store


async def ledger_setup(backend: Backend) -> tuple[EventBus, ProjectionStore, MessageLedger]:
    """A bus on the test's topics and a `MessageLedger` with its store."""
    ledger, store = await projection_setup(backend, MessageLedger(), "ledger")
    return await backend.bus(), store, ledger


class DeliveryScenarios:
    """Subclasses provide the `backend` fixture."""

    @pytest.fixture
    async def running(self) -> AsyncIterator[list[Any]]:
        """Runners and relay tasks started by a test, stopped afterwards."""
        started: list[Any] = []
        yield started
        for item in reversed(started):
            if isinstance(item, asyncio.Task):
                item.cancel()
                await asyncio.gather(item, return_exceptions=True)
            else:
                await item.stop()

    async def start_relay(self, store: ProjectionStore, bus: EventBus, running: list) -> None:
        relay = OutboxRelay(store, bus)
        store.on_commit(relay.wake)
        running.append(asyncio.create_task(relay.run()))

    async def test_order_per_key_group_split_and_handover(
        self, backend: Backend, running: list
    ) -> None:
        bus, store, ledger = await ledger_setup(backend)
        first = messages(keys=30, per_key=20)
        await bus.publish_events(first)

        members = [ProjectionRunner(await backend.bus(), store, ledger) for _ in range(2)]
        for member in members:
            await member.start()
            running.append(member)
        partitions = {(CONVERSATION.name, p) for p in range(CONVERSATION.partitions)}

        async def split() -> bool:
            owned = [m._subscription.assignment() for m in members]
            return all(owned) and not owned[0] & owned[1] and owned[0] | owned[1] == partitions

        await eventually(split, "two members to split the partitions")
        await eventually(
            lambda: _count_at_least(store, ledger, len(first)), "the first messages applied"
        )

        await members[1].stop()
        running.remove(members[1])
        second = messages(keys=30, per_key=20, start=20)
        await bus.publish_events(second)
        await eventually(
            lambda: _count_at_least(store, ledger, len(first) + len(second)),
            "the survivor to apply everything after the handover",
        )
        assert members[0]._subscription.assignment() == partitions
        await assert_applied_once(store, ledger, first + second, "every event applied exactly once")
        async with store.engine.connect() as connection:
            assert await ledger.out_of_order(connection) == 0, "order per key holds"

    async def test_consumer_killed_with_sigkill_applies_every_event_exactly_once(
        self, backend: Backend, running: list
    ) -> None:
        bus, store, ledger = await ledger_setup(backend)
        published = messages(keys=40, per_key=100)
        await bus.publish_events(published)
        url = await backend.store_url("ledger")
        command = [
            sys.executable,
            "-m",
            CHILD_MODULE,
            *backend.child_arguments(),
            "--database",
            url,
        ]

        async def spawn() -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                *command,
                cwd=REPO_DIR,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )

        chance = random.Random(7)
        kills = 0
        for round_number in range(10):
            before = len(await applications(store, ledger))
            if before == len(published):  # all applied already: give the next child work
                more = messages(keys=40, per_key=25, start=1000 * (round_number + 1))
                await bus.publish_events(more)
                published += more
            child = await spawn()
            try:
                await eventually(
                    lambda before=before: _count_at_least(store, ledger, before + 1),
                    "the child to make progress",
                )
                await asyncio.sleep(chance.uniform(0.0, 0.2))
            finally:
                child.send_signal(signal.SIGKILL)
                await child.wait()
                kills += 1
        assert kills == 10

        last = await spawn()
        try:
            await eventually(
                lambda: _count_at_least(store, ledger, len(published)),
                "a restarted consumer to finish",
                within=120,
            )
            await assert_applied_once(store, ledger, published, "no event applied twice")

            downstream, downstream_store = await projection_setup(
                backend, ClassifiedLedger(), "downstream"
            )
            consumer = ProjectionRunner(await backend.bus(), downstream_store, downstream)
            await consumer.start()
            running.append(consumer)
            await eventually(
                lambda: _count_at_least(downstream_store, downstream, len(published)),
                "every emitted event to be published and applied downstream",
                within=120,
            )
            await assert_applied_once(
                downstream_store, downstream, published, "downstream applied each once"
            )
        finally:
            last.send_signal(signal.SIGKILL)
            await last.wait()

    async def test_crash_between_commit_and_publish(self, backend: Backend, running: list) -> None:
        bus, store, ledger = await ledger_setup(backend)
        good = messages(keys=10, per_key=10)
        poison = message("conv-3", 99, text=POISON)
        await bus.publish_events([*good, poison])
        runner = ProjectionRunner(bus, store, ledger, retry=FAST_RETRY)
        await runner.start()
        running.append(runner)
        await eventually(lambda: _count_at_least(store, ledger, len(good)), "messages applied")

        crashing = _PublishThenCrash(bus)
        with pytest.raises(RuntimeError, match="crash"):
            await OutboxRelay(store, crashing).publish_pending()
        assert crashing.published, "the crash happened after the broker acknowledged"
        # The restarted relay publishes the unmarked rows again, with the same ids.
        while await OutboxRelay(store, bus).publish_pending():
            pass

        downstream, downstream_store = await projection_setup(
            backend, ClassifiedLedger(), "downstream"
        )
        consumer = ProjectionRunner(bus, downstream_store, downstream)
        await consumer.start()
        running.append(consumer)
        await eventually(
            lambda: _count_at_least(downstream_store, downstream, len(good)), "downstream"
        )
        on_log = await _read_all(bus, ROUTING.name)
        ids_on_log = [r.header("ce_id") for r in on_log]
        assert len(ids_on_log) > len(set(ids_on_log)), "the re-publish duplicated records"
        await assert_applied_once(
            downstream_store, downstream, good, "downstream recognised the re-published ids"
        )
        causes = {_causation(r) for r in on_log}
        assert poison.id not in causes, "the rolled-back emit of the poison was never published"

    async def test_poison_goes_to_the_dlq_and_its_partition_keeps_flowing(
        self, backend: Backend, running: list
    ) -> None:
        bus, store, ledger = await ledger_setup(backend)
        key = "conv-poisoned"
        before = [message(key, 0), message(key, 1, text=POISON)]
        garbage = KafkaRecord(
            topic=CONVERSATION.name, key=key.encode(), value=b"{not json", headers=()
        )
        after = [message(key, 2), message(key, 3)]
        await bus.publish_events(before)
        await bus.publish([garbage])
        await bus.publish_events(after)
        runner = ProjectionRunner(bus, store, ledger, retry=FAST_RETRY)
        await self.start_relay(store, bus, running)
        await runner.start()
        running.append(runner)

        await eventually(lambda: _count_at_least(store, ledger, 3), "the healthy messages")
        counts = await applications(store, ledger)
        assert set(counts) == {before[0].id, after[0].id, after[1].id}

        async def two_dead_letters() -> bool:
            return len(await list_dead_letters(bus)) == 2

        await eventually(two_dead_letters, "two dead letters")
        letters = {d.data.error.stage.value: d for d in await list_dead_letters(bus)}
        assert set(letters) == {"handle", "decode"}
        handled = letters["handle"].data
        assert handled.original.event_id == before[1].id
        assert handled.attempts == FAST_RETRY.attempts
        assert handled.handler == ledger.name
        assert "poison" in handled.error.message

        await runner.stop()
        running.remove(runner)
        fixed = ProjectionRunner(bus, store, MessageLedger(poison_text=None), retry=FAST_RETRY)
        await fixed.start()
        running.append(fixed)
        await redrive(bus, letters["handle"].id)
        await eventually(lambda: _count_at_least(store, ledger, 4), "the redriven message")
        counts = await applications(store, ledger)
        assert counts[before[1].id] == 1

    async def test_replayed_projection_equals_the_live_one(
        self, backend: Backend, running: list
    ) -> None:
        bus, store, ledger = await ledger_setup(backend)
        published = messages(keys=25, per_key=12)
        await bus.publish_events(published)
        runner = ProjectionRunner(bus, store, ledger)
        await runner.start()
        running.append(runner)
        await eventually(lambda: _count_at_least(store, ledger, len(published)), "live")
        await runner.stop()
        running.remove(runner)
        live = await _snapshot(store, ledger)
        outbox_before = await _outbox_size(store)

        progress: list[tuple[int, int]] = []
        result = await replay(bus, store, ledger, progress=lambda d, t: progress.append((d, t)))

        assert result.records == len(published)
        assert progress[-1] == (len(published), len(published))
        assert await _snapshot(store, ledger) == live
        assert await _outbox_size(store) == outbox_before, "a replay re-publishes nothing"


async def assert_applied_once(
    store: ProjectionStore, ledger: Any, expected: Sequence[Any], why: str
) -> None:
    """The ledger holds exactly the expected events (by id, or by causing id downstream),
    each applied once."""
    counts = await applications(store, ledger)
    assert sorted(counts) == sorted(e.id for e in expected), f"{why}: events missing or extra"
    assert set(counts.values()) == {1}, why


async def _count_at_least(store: ProjectionStore, ledger: Any, count: int) -> bool:
    return len(await applications(store, ledger)) >= count


async def _snapshot(store: ProjectionStore, ledger: MessageLedger) -> dict[str, list]:
    async with store.engine.connect() as connection:
        snapshot = {}
        for table in ledger.metadata.sorted_tables:
            rows = await connection.execute(select(table))
            snapshot[table.name] = sorted(tuple(row) for row in rows)
        return snapshot


async def _outbox_size(store: ProjectionStore) -> int:
    async with store.engine.connect() as connection:
        return len((await connection.execute(select(OUTBOX.c.event_id))).all())


async def _read_all(bus: EventBus, topic: str) -> list:
    records = []
    for (name, partition), end in (await bus.end_offsets([topic])).items():
        offset = 0
        while offset < end:
            chunk = await bus.read(name, partition, offset, 500)
            records.extend(chunk)
            offset = chunk[-1].offset + 1
    return records


def _causation(record: Any) -> str | None:
    import json

    return json.loads(record.value).get("causationid")


class _PublishThenCrash(EventBus):
    """Publishes through the real bus, then dies before the relay can mark the rows."""

    def __init__(self, inner: EventBus) -> None:
        self.inner = inner
        self.published = 0

    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        await self.inner.publish(records)
        self.published += len(records)
        raise RuntimeError("crash after the broker acknowledged")

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def subscribe(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def partitions(self, topic: str) -> int:
        return await self.inner.partitions(topic)

    async def end_offsets(self, topics: Sequence[str]) -> dict:
        return await self.inner.end_offsets(topics)

    async def committed(self, group: str, topics: Sequence[str]) -> dict:
        return await self.inner.committed(group, topics)

    async def read(self, topic: str, partition: int, offset: int, max_records: int = 500) -> list:
        return await self.inner.read(topic, partition, offset, max_records)


class TestEmbedded(DeliveryScenarios):
    @pytest.fixture
    async def backend(self, tmp_path: Path) -> AsyncIterator[Backend]:
        backend = EmbeddedBackend(tmp_path)
        yield backend
        await backend.close()


@pytest.mark.integration
class TestKafkaAndPostgres(DeliveryScenarios):
    @pytest.fixture
    async def backend(
        self, kafka_bootstrap_servers: str, database_url: str
    ) -> AsyncIterator[Backend]:
        backend = KafkaPostgresBackend(kafka_bootstrap_servers, database_url)
        yield backend
        await backend.close()
