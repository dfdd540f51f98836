"""A batch of the clock projection loads (and locks) each conversation once and saves it
once, however many of its events the batch holds, and ends as event-by-event would."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

from convohub.contracts import to_kafka_record
from convohub.runtime.bus.port import LogRecord
from convohub.runtime.projection import ConsumedEvent
from convohub.runtime.service import ManualClock, create_tables
from convohub.runtime.store import ProjectionStore, create_engine
from convohub.sla.bootstrap import create_service
from services.sla.tests.scenario import (
    agent_reply,
    customer_message,
    emitted,
    hub_config,
    labels,
    started,
)


def consumed(events: list[Any]) -> list[ConsumedEvent]:
    out = []
    for offset, envelope in enumerate(events):
        record = to_kafka_record(envelope)
        log = LogRecord(record.topic, 0, offset, record.key, record.value, record.headers, 0)
        out.append(ConsumedEvent.of(envelope, log))
    return out


async def apply_batches(tmp_path: Path, name: str, batches: list[list[Any]]) -> Any:
    service: Any = create_service(hub_config())
    store = ProjectionStore(create_engine(f"sqlite+aiosqlite:///{tmp_path / name}.db"))
    await create_tables(service, store)
    statements: list[str] = []
    event.listen(
        store.engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, *_: statements.append(statement),
    )
    for batch in batches:
        async with store.unit_of_work() as uow:
            await service.clock_projection.apply(consumed(batch), uow)
            await uow.commit()
    return store, statements


def touching_conversations(statements: list[str], verb: str) -> int:
    return sum(1 for s in statements if s.startswith(verb) and "sla_conversations" in s)


async def test_one_load_and_one_save_per_conversation_per_batch(tmp_path: Path) -> None:
    t0 = ManualClock().now()
    events = [started("c1", t0), started("c2", t0)]
    for n in range(3):
        events += [
            customer_message("c1", n, t0 + timedelta(seconds=10 * n + 1)),
            agent_reply("c1", n, t0 + timedelta(seconds=10 * n + 5)),
            customer_message("c2", n, t0 + timedelta(seconds=10 * n + 2)),
        ]
    store, statements = await apply_batches(tmp_path, "batched", [events])
    assert touching_conversations(statements, "SELECT") == 2
    assert touching_conversations(statements, "INSERT") == 2
    assert touching_conversations(statements, "UPDATE") == 0

    # The same events one batch each end with the same clock events.
    one_by_one, _ = await apply_batches(tmp_path, "single", [[e] for e in events])
    assert sorted(labels(await emitted(store))) == sorted(labels(await emitted(one_by_one)))
    assert labels(await emitted(store))  # clocks started, replies met them
    for each in (store, one_by_one):
        await each.engine.dispose()
