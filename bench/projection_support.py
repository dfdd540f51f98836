"""What the projection benchmarks share: events built from the catalogue's examples, the
raw baseline (a projection inserting one row per event) and a timed run of a projection
through the real `ProjectionRunner` over an embedded log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, String, Table

from convohub.contracts import new_event
from convohub.contracts.catalogue import payload_class, payload_examples
from convohub.runtime.bus.embedded import EmbeddedBus
from convohub.runtime.consumer import ProjectionRunner
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.store import ProjectionStore, UnitOfWork, create_engine, migrate_runtime

BASELINE_METADATA = MetaData()
ROWS = Table("bench_rows", BASELINE_METADATA, Column("event_id", String(64), primary_key=True))


class InsertOneRowPerEvent(Projection):
    """The floor of any projection: decode, validate, bookkeeping, one row per event."""

    name = "bench.baseline"
    metadata = BASELINE_METADATA

    def __init__(self, topics: Sequence[str]) -> None:
        self.topics = tuple(topics)

    async def apply(self, events: Sequence[ConsumedEvent], uow: UnitOfWork) -> None:
        await uow.connection.execute(ROWS.insert(), [{"event_id": c.event.id} for c in events])


def event(kind: str, tenant: str = "acme", **fields: Any) -> Any:
    """A `convohub.{kind}.v1` event: the catalogue's first example with `fields` changed."""
    type_ = f"convohub.{kind}.v1"
    payload = payload_class(type_).model_validate({**payload_examples(type_)[0], **fields})
    return new_event(payload, tenant_id=tenant, source="/bench")


async def run(
    bus: EmbeddedBus, folder: Path, projection: Projection, metadata: MetaData, total: int
) -> float:
    """Seconds `projection` takes to apply the log's first `total` records (its tables
    from `metadata`, in a SQLite file of its own under `folder`)."""
    store = ProjectionStore(create_engine(f"sqlite+aiosqlite:///{folder / projection.name}.db"))
    await migrate_runtime(store.engine)
    async with store.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    runner = ProjectionRunner(bus, store, projection, max_batch=500)
    started = time.perf_counter()
    await runner.start()
    while sum((await store.positions(projection.name)).values()) < total:  # noqa: ASYNC110 - polls the database
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await runner.stop()
    await store.engine.dispose()
    return elapsed
