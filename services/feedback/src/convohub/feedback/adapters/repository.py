"""Reading and writing the feedback tables on a connection (inside a unit of work)."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.feedback.adapters.tables import CONVERSATIONS, FOLLOW_UPS, SETTINGS, SURVEYS
from convohub.feedback.domain.conversations import ConversationState

_DATETIME_FIELDS = {
    f.name for f in dataclasses.fields(ConversationState) if "datetime" in str(f.type)
}


def _insert(connection: AsyncConnection, table: Any) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def state_to_json(state: ConversationState) -> dict[str, Any]:
    data = dataclasses.asdict(state)
    for name in _DATETIME_FIELDS:
        if data[name] is not None:
            data[name] = data[name].isoformat()
    return data


def state_from_json(data: dict[str, Any]) -> ConversationState:
    values = dict(data)
    for name in _DATETIME_FIELDS:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    known = {f.name for f in dataclasses.fields(ConversationState)}
    return ConversationState(**{k: v for k, v in values.items() if k in known})


async def load_states(
    connection: AsyncConnection, conversation_ids: Iterable[str]
) -> dict[str, ConversationState]:
    ids = sorted(set(conversation_ids))
    if not ids:
        return {}
    query = select(CONVERSATIONS.c.state).where(CONVERSATIONS.c.conversation_id.in_(ids))
    if connection.dialect.name == "postgresql":
        # Customer events are keyed by customer, so another replica may update the same
        # conversation concurrently: lock the rows until this unit of work commits.
        query = query.order_by(CONVERSATIONS.c.conversation_id).with_for_update()
    rows = await connection.execute(query)
    states = [state_from_json(row.state) for row in rows]
    return {state.conversation_id: state for state in states}


async def save_states(connection: AsyncConnection, states: Sequence[ConversationState]) -> None:
    if not states:
        return
    rows = [
        {
            "conversation_id": s.conversation_id,
            "tenant_id": s.tenant_id,
            "customer_id": s.customer_id,
            "started_at": s.started_at,
            "closed_at": s.closed_at,
            "state": state_to_json(s),
        }
        for s in states
    ]
    statement = _insert(connection, CONVERSATIONS)
    statement = statement.on_conflict_do_update(
        index_elements=["conversation_id"],
        set_={
            name: statement.excluded[name]
            for name in ("tenant_id", "customer_id", "started_at", "closed_at", "state")
        },
    )
    await connection.execute(statement, rows)


async def tenant_states(
    connection: AsyncConnection, tenant_id: str, since: datetime | None, until: datetime | None
) -> list[ConversationState]:
    query = select(CONVERSATIONS.c.state).where(
        CONVERSATIONS.c.tenant_id == tenant_id, CONVERSATIONS.c.started_at.is_not(None)
    )
    if since is not None:
        query = query.where(CONVERSATIONS.c.started_at >= since)
    if until is not None:
        query = query.where(CONVERSATIONS.c.started_at < until)
    return [state_from_json(row.state) for row in await connection.execute(query)]


# --- surveys ------------------------------------------------------------------------------


async def insert_survey(connection: AsyncConnection, row: dict[str, Any]) -> bool:
    """Insert a survey unless one with that id exists; True when inserted."""
    statement = _insert(connection, SURVEYS).on_conflict_do_nothing(index_elements=["survey_id"])
    result = await connection.execute(statement, [row])
    return bool(result.rowcount)


async def pending_surveys(
    connection: AsyncConnection, conversation_ids: Iterable[str]
) -> dict[str, Any]:
    """The newest sent, unanswered survey of each of the conversations that has one."""
    ids = sorted(set(conversation_ids))
    if not ids:
        return {}
    query = (
        select(SURVEYS)
        .where(SURVEYS.c.conversation_id.in_(ids), SURVEYS.c.status == "sent")
        .order_by(SURVEYS.c.sent_at)
    )
    return {row.conversation_id: row for row in await connection.execute(query)}


async def cancel_scheduled(connection: AsyncConnection, conversation_id: str) -> None:
    """A reopened conversation is not surveyed about its earlier resolution (follow-up
    re-surveys stay)."""
    await connection.execute(
        update(SURVEYS)
        .where(
            SURVEYS.c.conversation_id == conversation_id,
            SURVEYS.c.status == "scheduled",
            SURVEYS.c.follow_up_id.is_(None),
        )
        .values(status="cancelled")
    )


async def has_open_survey(connection: AsyncConnection, conversation_id: str) -> bool:
    query = select(SURVEYS.c.survey_id).where(
        SURVEYS.c.conversation_id == conversation_id,
        SURVEYS.c.status.in_(("scheduled", "sent")),
    )
    return (await connection.execute(query.limit(1))).first() is not None


async def survey(connection: AsyncConnection, survey_id: str) -> Any:
    return (
        await connection.execute(select(SURVEYS).where(SURVEYS.c.survey_id == survey_id))
    ).first()


async def due_surveys(
    connection: AsyncConnection, status: str, column: Any, now: datetime, limit: int
) -> list[Any]:
    query = (
        select(SURVEYS)
        .where(SURVEYS.c.status == status, column <= now)
        .order_by(column)
        .limit(limit)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(await connection.execute(query))


async def transition_survey(
    connection: AsyncConnection, survey_id: str, from_status: str, **values: Any
) -> bool:
    """Move a survey on only if it is still in `from_status`: the exactly-once guard."""
    result = await connection.execute(
        update(SURVEYS)
        .where(and_(SURVEYS.c.survey_id == survey_id, SURVEYS.c.status == from_status))
        .values(**values)
    )
    return result.rowcount == 1


# --- follow-ups ---------------------------------------------------------------------------


async def open_follow_up(connection: AsyncConnection, conversation_id: str) -> Any:
    query = select(FOLLOW_UPS).where(
        FOLLOW_UPS.c.conversation_id == conversation_id, FOLLOW_UPS.c.status == "open"
    )
    return (await connection.execute(query.limit(1))).first()


async def insert_follow_up(connection: AsyncConnection, row: dict[str, Any]) -> bool:
    statement = _insert(connection, FOLLOW_UPS).on_conflict_do_nothing(
        index_elements=["follow_up_id"]
    )
    return bool((await connection.execute(statement, [row])).rowcount)


async def follow_up(connection: AsyncConnection, follow_up_id: str) -> Any:
    query = select(FOLLOW_UPS).where(FOLLOW_UPS.c.follow_up_id == follow_up_id)
    return (await connection.execute(query)).first()


async def close_follow_up(connection: AsyncConnection, follow_up_id: str, **values: Any) -> bool:
    result = await connection.execute(
        update(FOLLOW_UPS)
        .where(FOLLOW_UPS.c.follow_up_id == follow_up_id, FOLLOW_UPS.c.status == "open")
        .values(status="closed", **values)
    )
    return result.rowcount == 1


# --- settings -----------------------------------------------------------------------------


async def link_secret(connection: AsyncConnection) -> str:
    """The stored link-signing key, generated on first use (shared by all replicas)."""
    statement = _insert(connection, SETTINGS).on_conflict_do_nothing(index_elements=["name"])
    await connection.execute(statement, [{"name": "link_secret", "value": secrets.token_hex(32)}])
    query = select(SETTINGS.c.value).where(SETTINGS.c.name == "link_secret")
    return str(await connection.scalar(query))


async def attach_customer(
    connection: AsyncConnection, conversation_id: str, customer_id: str
) -> None:
    """CRM identified the conversation's customer (perhaps after its survey was stored)."""
    for table in (SURVEYS, FOLLOW_UPS):
        await connection.execute(
            update(table)
            .where(table.c.conversation_id == conversation_id, table.c.customer_id.is_(None))
            .values(customer_id=customer_id)
        )


# --- erasure ------------------------------------------------------------------------------


async def erase_customer(
    connection: AsyncConnection, customer_id: str, conversation_ids: Iterable[str]
) -> None:
    """Forget what the customer wrote: survey comments and raw answers, follow-up notes."""
    ids = sorted(set(conversation_ids))
    surveys = SURVEYS.c.customer_id == customer_id
    follow_ups = FOLLOW_UPS.c.customer_id == customer_id
    if ids:
        surveys = surveys | SURVEYS.c.conversation_id.in_(ids)
        follow_ups = follow_ups | FOLLOW_UPS.c.conversation_id.in_(ids)
    await connection.execute(update(SURVEYS).where(surveys).values(comment=None, raw_answer=None))
    await connection.execute(update(FOLLOW_UPS).where(follow_ups).values(note=None))


async def conversations_of_customer(connection: AsyncConnection, customer_id: str) -> list[str]:
    query = select(CONVERSATIONS.c.conversation_id).where(
        CONVERSATIONS.c.customer_id == customer_id
    )
    return list((await connection.execute(query)).scalars())
