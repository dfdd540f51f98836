"""The erasure ledger (`ingest_erased_conversations`): which conversations' customer was
erased. Written in the transaction of whichever projection applies `customer.erased`
first; read by every projection before it stores an address, a name or a text.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.ingest.adapters.tables import ERASED_CONVERSATIONS
from convohub.runtime.store import purge_published_for_keys

__all__ = ["erased_conversations", "remember_erased"]


async def erased_conversations(
    connection: AsyncConnection, tenant_id: str, conversation_ids: Iterable[str]
) -> set[str]:
    """Those of the conversations whose customer was erased."""
    wanted = sorted(set(conversation_ids))
    if not wanted:
        return set()
    rows = await connection.execute(
        select(ERASED_CONVERSATIONS.c.conversation_id).where(
            ERASED_CONVERSATIONS.c.tenant_id == tenant_id,
            ERASED_CONVERSATIONS.c.conversation_id.in_(wanted),
        )
    )
    return set(rows.scalars())


async def remember_erased(
    connection: AsyncConnection, tenant_id: str, conversation_ids: Collection[str], at: datetime
) -> None:
    """Record the conversations as erased (idempotent), and drop the outbox's published
    copies of their events (an agent's reply holds the address and the text)."""
    await purge_published_for_keys(connection, conversation_ids)
    rows = [
        {"tenant_id": tenant_id, "conversation_id": conversation_id, "erased_at": at}
        for conversation_id in sorted(set(conversation_ids))
    ]
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(ERASED_CONVERSATIONS).on_conflict_do_nothing(
        index_elements=["tenant_id", "conversation_id"]
    )
    await connection.execute(statement, rows)
