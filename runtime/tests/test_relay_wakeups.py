"""The relay is woken by commits that wrote outbox rows only: a projection batch that emits
nothing (most of them) does not send it for an advisory lock and an empty read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from convohub.contracts.catalogue import example_event
from convohub.runtime.store import ProjectionStore, create_engine, migrate_runtime


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ProjectionStore]:
    store = ProjectionStore(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.sqlite3'}"))
    await migrate_runtime(store.engine)
    yield store
    await store.engine.dispose()


async def test_only_commits_with_outbox_rows_run_the_commit_callbacks(
    store: ProjectionStore,
) -> None:
    calls: list[str] = []
    store.on_commit(lambda: calls.append("woken"))
    async with store.unit_of_work() as uow:
        uow.advance("group", "convohub.conversation.v1", 0, 1)
        await uow.commit()
    assert calls == []
    async with store.unit_of_work() as uow:
        uow.emit(example_event("convohub.conversation.message_received.v1"))
        await uow.commit()
    assert calls == ["woken"]
