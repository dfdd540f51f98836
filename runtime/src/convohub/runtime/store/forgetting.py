"""Forgetting an erased person's copies in the outbox.

Once published, an outbox row is only a copy of a record that is on the log; a service
that applies `customer.erased` deletes the published rows of the person's keys (their
conversation or customer ids) in the same transaction as its own purge.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.runtime.store.tables import OUTBOX

__all__ = ["purge_published_for_keys"]


async def purge_published_for_keys(connection: AsyncConnection, keys: Collection[str]) -> int:
    """Delete the published outbox rows whose record key is one of `keys`, in the caller's
    transaction; returns how many. Rows not yet published stay, so nothing emitted is lost."""
    wanted = sorted({key.encode() for key in keys})
    if not wanted:
        return 0
    statement = delete(OUTBOX).where(OUTBOX.c.published_at.is_not(None), OUTBOX.c.key.in_(wanted))
    return (await connection.execute(statement)).rowcount
