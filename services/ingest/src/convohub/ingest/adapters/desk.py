"""The agent desk's tables: the conversation read model, its timeline, the customer map used
for erasure, and the idempotency record of agent commands.

Moments used for ordering and filtering are stored as fixed-width UTC ISO strings
(`2026-11-23T09:00:00.000000Z`), which sort the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.ingest.adapters.tables import METADATA

__all__ = [
    "DESK_COMMANDS",
    "DESK_CONVERSATIONS",
    "DESK_CUSTOMERS",
    "DESK_TIMELINE",
    "from_moment",
    "insert_ignoring_duplicates",
    "moment",
]

DESK_CONVERSATIONS = Table(
    "ingest_desk_conversations",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("conversation_id", String(255), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("channel", String(32)),
    Column("channel_id", String(64)),
    Column("channels", JSON, nullable=False),
    Column("customer", JSON),
    Column("customer_id", String(255)),
    Column("customer_erased", Boolean, nullable=False, default=False),
    Column("assigned_agent_id", String(255)),
    Column("skill_group", String(255)),
    Column("priority", String(4)),
    Column("vip", Boolean),
    Column("agents", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("started_at", String(32)),
    Column("updated_at", String(32), nullable=False),
    Index("ingest_desk_conversations_by_update", "tenant_id", "updated_at", "conversation_id"),
)

DESK_TIMELINE = Table(
    "ingest_desk_timeline",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("conversation_id", String(255), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("type", String(128), nullable=False),
    Column("occurred_at", String(32), nullable=False),
    Column("message_id", String(255)),
    Column("delivery_state", String(16)),
    Column("delivery_error", String(255)),
    Column("data", JSON, nullable=False),
    Index("ingest_desk_timeline_by_message", "tenant_id", "conversation_id", "message_id"),
)

DESK_CUSTOMERS = Table(
    "ingest_desk_customers",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("customer_id", String(255), primary_key=True),
    Column("conversation_id", String(255), primary_key=True),
)

DESK_COMMANDS = Table(
    "ingest_desk_commands",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("idempotency_key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("note", Text),
)


def moment(value: datetime) -> str:
    """A fixed-width UTC ISO string that sorts chronologically."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_moment(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


async def insert_ignoring_duplicates(
    connection: AsyncConnection, table: Table, rows: list[dict[str, Any]]
) -> None:
    """Insert rows, silently skipping those whose primary key exists (a re-applied event)."""
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).on_conflict_do_nothing(
        index_elements=[column.name for column in table.primary_key.columns]
    )
    await connection.execute(statement, rows)


async def load_conversation(
    connection: AsyncConnection, tenant_id: str, conversation_id: str, *, for_update: bool = False
) -> dict[str, Any] | None:
    query = select(DESK_CONVERSATIONS).where(
        DESK_CONVERSATIONS.c.tenant_id == tenant_id,
        DESK_CONVERSATIONS.c.conversation_id == conversation_id,
    )
    if for_update and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await connection.execute(query)).mappings().first()
    return dict(row) if row is not None else None


async def save_conversation(
    connection: AsyncConnection, row: dict[str, Any], *, existed: bool
) -> None:
    if existed:
        await connection.execute(
            DESK_CONVERSATIONS.update()
            .where(
                DESK_CONVERSATIONS.c.tenant_id == row["tenant_id"],
                DESK_CONVERSATIONS.c.conversation_id == row["conversation_id"],
            )
            .values(**row)
        )
    else:
        await connection.execute(DESK_CONVERSATIONS.insert().values(**row))


async def load_timeline(
    connection: AsyncConnection, tenant_id: str, conversation_id: str
) -> list[dict[str, Any]]:
    query = (
        select(DESK_TIMELINE)
        .where(
            DESK_TIMELINE.c.tenant_id == tenant_id,
            DESK_TIMELINE.c.conversation_id == conversation_id,
        )
        .order_by(DESK_TIMELINE.c.occurred_at, DESK_TIMELINE.c.event_id)
    )
    return [dict(row) for row in (await connection.execute(query)).mappings()]


async def list_conversations(
    connection: AsyncConnection,
    tenant_id: str,
    *,
    state: str | None,
    channel: str | None,
    channel_id: str | None,
    allowed_channel_ids: tuple[str, ...] | None,
    assignee: str | None,
    updated_since: datetime | None,
    after: tuple[str, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """One page, newest update first; `after` is the (updated_at, id) of the last row seen."""
    table = DESK_CONVERSATIONS
    conditions = [table.c.tenant_id == tenant_id]
    if state is not None:
        conditions.append(table.c.state == state)
    if channel is not None:
        conditions.append(table.c.channel == channel)
    if channel_id is not None:
        conditions.append(table.c.channel_id == channel_id)
    if allowed_channel_ids is not None:
        conditions.append(table.c.channel_id.in_(allowed_channel_ids))
    if assignee is not None:
        conditions.append(table.c.assigned_agent_id == assignee)
    if updated_since is not None:
        conditions.append(table.c.updated_at >= moment(updated_since))
    if after is not None:
        updated_at, conversation_id = after
        conditions.append(
            or_(
                table.c.updated_at < updated_at,
                and_(table.c.updated_at == updated_at, table.c.conversation_id < conversation_id),
            )
        )
    query = (
        select(table)
        .where(*conditions)
        .order_by(table.c.updated_at.desc(), table.c.conversation_id.desc())
        .limit(limit)
    )
    return [dict(row) for row in (await connection.execute(query)).mappings()]


async def load_conversations(
    connection: AsyncConnection, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The rows of many (tenant_id, conversation_id) keys, in one query per tenant."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    by_tenant: dict[str, list[str]] = {}
    for tenant_id, conversation_id in keys:
        by_tenant.setdefault(tenant_id, []).append(conversation_id)
    for tenant_id, ids in by_tenant.items():
        query = select(DESK_CONVERSATIONS).where(
            DESK_CONVERSATIONS.c.tenant_id == tenant_id,
            DESK_CONVERSATIONS.c.conversation_id.in_(sorted(ids)),
        )
        for row in (await connection.execute(query)).mappings():
            found[(tenant_id, row["conversation_id"])] = dict(row)
    return found


_UPDATE_CONVERSATION = (
    DESK_CONVERSATIONS.update()
    .where(
        DESK_CONVERSATIONS.c.tenant_id == bindparam("key_tenant_id"),
        DESK_CONVERSATIONS.c.conversation_id == bindparam("key_conversation_id"),
    )
    .values({column.name: bindparam(column.name) for column in DESK_CONVERSATIONS.columns})
)


async def save_conversations(
    connection: AsyncConnection, new: list[dict[str, Any]], changed: list[dict[str, Any]]
) -> None:
    """Insert the new rows and rewrite the changed ones, one statement each (executemany)."""
    if new:
        await connection.execute(DESK_CONVERSATIONS.insert(), new)
    if changed:
        await connection.execute(
            _UPDATE_CONVERSATION,
            [
                {
                    **row,
                    "key_tenant_id": row["tenant_id"],
                    "key_conversation_id": row["conversation_id"],
                }
                for row in changed
            ],
        )
