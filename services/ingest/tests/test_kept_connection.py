"""The claim and done-mark writers keep one connection between their transactions on
PostgreSQL (a pool checkout pre-pings: three round trips), and drop it after an error so a
dead one is replaced by a fresh, pinged one."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, text

from convohub.ingest.adapters.repository import KeptConnection
from convohub.runtime.store import ProjectionStore, create_engine

pytestmark = pytest.mark.integration


async def failing_transaction(kept: KeptConnection) -> None:
    async with kept.begin() as connection:
        await connection.execute(text("SELECT 1"))
        raise ZeroDivisionError  # the writer's own error


async def test_transactions_share_one_checkout_until_one_fails(fresh_database_url: str) -> None:
    store = ProjectionStore(create_engine(fresh_database_url))
    checkouts: list[Any] = []
    event.listen(store.engine.sync_engine.pool, "checkout", lambda *args: checkouts.append(1))
    kept = KeptConnection(lambda: store)
    try:
        for n in range(3):
            async with kept.begin() as connection:
                assert await connection.scalar(text("SELECT CAST(:n AS integer)"), {"n": n}) == n
        assert len(checkouts) == 1

        with pytest.raises(ZeroDivisionError):
            await failing_transaction(kept)
        assert store.engine.sync_engine.pool.checkedout() == 0  # given back, not kept
        async with kept.begin() as connection:
            assert await connection.scalar(text("SELECT 2")) == 2
        assert len(checkouts) == 2

        await kept.close()
        assert store.engine.sync_engine.pool.checkedout() == 0
    finally:
        await kept.close()
        await store.engine.dispose()
