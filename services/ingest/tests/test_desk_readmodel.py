"""The read model's fold, applied directly on SQLite: batches, re-application (a command's
event applied at once and again from the log) and erasure in the middle of a batch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from convohub.contracts import Envelope, new_event
from convohub.contracts.catalogue import payload_class, payload_examples
from convohub.ingest.adapters.desk import DESK_CONVERSATIONS, DESK_TIMELINE
from convohub.ingest.adapters.tables import METADATA
from convohub.ingest.handlers.readmodel import apply_to_read_model
from convohub.runtime.store import ProjectionStore, create_engine, migrate_runtime


def event(event_type: str, **fields: Any) -> Envelope[Any]:
    payload = payload_class(event_type).model_validate(
        {**payload_examples(event_type)[0], **fields}
    )
    return new_event(payload, tenant_id="acme", source="/test")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ProjectionStore]:
    store = ProjectionStore(create_engine(f"sqlite+aiosqlite:///{tmp_path}/desk.sqlite3"))
    await migrate_runtime(store.engine)
    async with store.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    yield store
    await store.engine.dispose()


async def apply(store: ProjectionStore, events: list[Envelope[Any]]) -> None:
    async with store.unit_of_work() as uow:
        await apply_to_read_model(uow.connection, events)
        await uow.commit()


async def snapshot(store: ProjectionStore) -> tuple[list[Any], list[Any]]:
    async with store.engine.connect() as connection:
        rows = (await connection.execute(select(DESK_CONVERSATIONS))).mappings().all()
        timeline = (
            (await connection.execute(select(DESK_TIMELINE).order_by(DESK_TIMELINE.c.event_id)))
            .mappings()
            .all()
        )
    return [dict(row) for row in rows], [dict(entry) for entry in timeline]


def conversation_events(conversation_id: str) -> list[Envelope[Any]]:
    return [
        event("convohub.conversation.started.v1", conversation_id=conversation_id),
        event(
            "convohub.conversation.message_received.v1",
            conversation_id=conversation_id,
            content={"text": "5 Nanjing Road"},
        ),
        event("convohub.routing.assigned.v1", conversation_id=conversation_id),
        event("convohub.conversation.resolved.v1", conversation_id=conversation_id),
    ]


async def test_one_batch_equals_one_event_at_a_time_and_reapplying_changes_nothing(
    store: ProjectionStore, tmp_path: Path
) -> None:
    events = conversation_events("a") + conversation_events("b")
    await apply(store, events)
    batched = await snapshot(store)
    await apply(store, events)  # the log delivering what a command already applied
    assert await snapshot(store) == batched

    other = ProjectionStore(create_engine(f"sqlite+aiosqlite:///{tmp_path}/one.sqlite3"))
    await migrate_runtime(other.engine)
    async with other.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    for single in events:
        await apply(other, [single])
    assert await snapshot(other) == batched
    await other.engine.dispose()

    rows, timeline = batched
    assert {(row["conversation_id"], row["state"], row["assigned_agent_id"]) for row in rows} == {
        ("a", "resolved", "agent-42"),
        ("b", "resolved", "agent-42"),
    }
    assert len(timeline) == 8


async def test_erasure_inside_a_batch_is_not_undone_by_later_events(
    store: ProjectionStore,
) -> None:
    identified = event("convohub.customer.identified.v1", customer_id="cust-1", conversation_id="a")
    erased = event("convohub.customer.erased.v1", customer_id="cust-1")
    later = event(
        "convohub.conversation.message_received.v1",
        conversation_id="a",
        message_id="msg-late",
        content={"text": "call me on +8613800138000"},
    )
    await apply(store, [*conversation_events("a"), identified, erased, later])
    rows, timeline = await snapshot(store)
    assert rows[0]["customer_erased"] is True
    assert rows[0]["customer"]["address"] == "[redacted]"
    assert "Nanjing" not in str(timeline)
    assert "+8613800138000" not in str(timeline)
    assert "+8613800138000" not in str(rows)
