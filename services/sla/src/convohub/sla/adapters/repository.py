"""Reading and writing the sla tables through one connection (the unit of work's)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.sla.adapters.tables import (
    CLOCKS,
    CONVERSATIONS,
    CUSTOMER_CONVERSATIONS,
    CUSTOMER_SEGMENTS,
    POLICY_VERSIONS,
    TIMERS,
)
from convohub.sla.domain.clocks import Clock, ConversationSla, PlannedTimer

__all__ = [
    "as_utc",
    "claim_due_timers",
    "load_conversation",
    "mark_fired",
    "replace_timers",
    "save_clock",
    "save_conversation",
]


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored moment is UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


async def load_conversation(
    connection: AsyncConnection, tenant_id: str, conversation_id: str, *, lock: bool = False
) -> ConversationSla | None:
    query = select(CONVERSATIONS.c.state).where(
        CONVERSATIONS.c.tenant_id == tenant_id, CONVERSATIONS.c.conversation_id == conversation_id
    )
    if lock and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    state = await connection.scalar(query)
    return None if state is None else ConversationSla.model_validate_json(state)


async def save_conversation(
    connection: AsyncConnection, state: ConversationSla, *, exists: bool
) -> None:
    values = {"open": state.open, "state": state.model_dump_json()}
    if exists:
        await connection.execute(
            update(CONVERSATIONS)
            .where(
                CONVERSATIONS.c.tenant_id == state.tenant_id,
                CONVERSATIONS.c.conversation_id == state.conversation_id,
            )
            .values(**values)
        )
    else:
        await connection.execute(
            insert(CONVERSATIONS).values(
                tenant_id=state.tenant_id, conversation_id=state.conversation_id, **values
            )
        )


async def open_conversations(connection: AsyncConnection, tenant_id: str) -> list[str]:
    query = select(CONVERSATIONS.c.conversation_id).where(
        CONVERSATIONS.c.tenant_id == tenant_id, CONVERSATIONS.c.open.is_(True)
    )
    return list((await connection.execute(query)).scalars())


async def save_clock(connection: AsyncConnection, state: ConversationSla, clock: Clock) -> None:
    values = {
        "tenant_id": state.tenant_id,
        "conversation_id": state.conversation_id,
        "metric": clock.metric.value,
        "cycle": clock.cycle,
        "policy_id": clock.policy_id,
        "state": clock.state.value,
        "target_seconds": clock.target_seconds,
        "counted_seconds": clock.counted.total_seconds(),
        "running_since": clock.running_since and _utc(clock.running_since),
        "started_at": _utc(clock.started_at),
        "due_at": _utc(clock.due_at),
        "ended_at": clock.ended_at and _utc(clock.ended_at),
        "pause_reason": clock.pause_reason and clock.pause_reason.value,
    }
    result = await connection.execute(
        update(CLOCKS).where(CLOCKS.c.clock_id == clock.clock_id).values(**values)
    )
    if result.rowcount == 0:
        await connection.execute(insert(CLOCKS).values(clock_id=clock.clock_id, **values))


async def clocks_of(
    connection: AsyncConnection, tenant_id: str, conversation_id: str
) -> Sequence[Row[Any]]:
    query = (
        select(CLOCKS)
        .where(CLOCKS.c.tenant_id == tenant_id, CLOCKS.c.conversation_id == conversation_id)
        .order_by(CLOCKS.c.started_at, CLOCKS.c.metric)
    )
    return (await connection.execute(query)).all()


async def running_clocks_by_due(
    connection: AsyncConnection, tenant_id: str, limit: int
) -> Sequence[Row[Any]]:
    query = (
        select(CLOCKS)
        .where(CLOCKS.c.tenant_id == tenant_id, CLOCKS.c.state == "running")
        .order_by(CLOCKS.c.due_at)
        .limit(limit)
    )
    return (await connection.execute(query)).all()


async def replace_timers(
    connection: AsyncConnection,
    state: ConversationSla,
    clock: Clock,
    timers: Iterable[PlannedTimer],
    *,
    correlation_id: str,
) -> None:
    """Make the clock's unfired timers exactly `timers`; a fired key is never re-armed.

    The delete runs first: on PostgreSQL it waits for a timer loop holding one of these
    rows, and the select that follows then sees that timer as fired.
    """
    await connection.execute(
        delete(TIMERS).where(TIMERS.c.clock_id == clock.clock_id, TIMERS.c.fired_at.is_(None))
    )
    fired = set(
        (
            await connection.execute(
                select(TIMERS.c.timer_key).where(TIMERS.c.clock_id == clock.clock_id)
            )
        ).scalars()
    )
    rows = [
        {
            "timer_id": f"{clock.clock_id}|{timer.key}",
            "tenant_id": state.tenant_id,
            "conversation_id": state.conversation_id,
            "clock_id": clock.clock_id,
            "timer_key": timer.key,
            "kind": timer.kind.value,
            "due_at": _utc(timer.due_at),
            "fired_at": None,
            "policy_id": clock.policy_id,
            "metric": clock.metric.value,
            "target_seconds": clock.target_seconds,
            "offset_seconds": timer.offset.total_seconds(),
            "clock_due_at": _utc(clock.due_at),
            "threshold_percent": timer.threshold_percent,
            "step": timer.step,
            "action": timer.action and timer.action.value,
            "target_id": timer.target_id,
            "cause_event_id": clock.cause_event_id,
            "correlation_id": correlation_id,
        }
        for timer in timers
        if timer.key not in fired
    ]
    if rows:
        await connection.execute(insert(TIMERS), rows)


async def due_timers_of_clock(
    connection: AsyncConnection, clock_id: str, now: datetime
) -> Sequence[Row[Any]]:
    """The clock's unfired timers due by `now` (to fire before the clock ends or pauses)."""
    query = (
        select(TIMERS)
        .where(
            TIMERS.c.clock_id == clock_id,
            TIMERS.c.fired_at.is_(None),
            TIMERS.c.due_at <= _utc(now),
        )
        .order_by(TIMERS.c.due_at, TIMERS.c.offset_seconds)
    )
    return (await connection.execute(query)).all()


async def claim_due_timers(
    connection: AsyncConnection, now: datetime, limit: int
) -> Sequence[Row[Any]]:
    """Up to `limit` unfired timers due by `now`, earliest first, locked for this transaction
    and skipped by any other claimer (PostgreSQL); SQLite's single writer needs no lock."""
    query = (
        select(TIMERS).where(TIMERS.c.due_at <= _utc(now)).order_by(TIMERS.c.due_at).limit(limit)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return (await connection.execute(query)).all()


async def next_due_at(connection: AsyncConnection) -> datetime | None:
    query = select(TIMERS.c.due_at).where(TIMERS.c.due_at.is_not(None)).order_by(TIMERS.c.due_at)
    return as_utc(await connection.scalar(query.limit(1)))


async def mark_fired(connection: AsyncConnection, timer_ids: Sequence[str], now: datetime) -> None:
    if timer_ids:
        await connection.execute(
            update(TIMERS)
            .where(TIMERS.c.timer_id.in_(list(timer_ids)))
            .values(due_at=None, fired_at=_utc(now))
        )


# -- customers ------------------------------------------------------------------------------


async def link_customer(
    connection: AsyncConnection, tenant_id: str, customer_id: str, conversation_id: str
) -> bool:
    """Remember that the conversation is the customer's; False when already known."""
    exists = await connection.scalar(
        select(CUSTOMER_CONVERSATIONS.c.customer_id).where(
            CUSTOMER_CONVERSATIONS.c.tenant_id == tenant_id,
            CUSTOMER_CONVERSATIONS.c.customer_id == customer_id,
            CUSTOMER_CONVERSATIONS.c.conversation_id == conversation_id,
        )
    )
    if exists is not None:
        return False
    await connection.execute(
        insert(CUSTOMER_CONVERSATIONS).values(
            tenant_id=tenant_id, customer_id=customer_id, conversation_id=conversation_id
        )
    )
    return True


async def conversations_of_customer(
    connection: AsyncConnection, tenant_id: str, customer_id: str
) -> list[str]:
    query = select(CUSTOMER_CONVERSATIONS.c.conversation_id).where(
        CUSTOMER_CONVERSATIONS.c.tenant_id == tenant_id,
        CUSTOMER_CONVERSATIONS.c.customer_id == customer_id,
    )
    return sorted((await connection.execute(query)).scalars())


async def segments_of_conversation(
    connection: AsyncConnection, tenant_id: str, conversation_id: str
) -> tuple[str, ...]:
    query = (
        select(CUSTOMER_SEGMENTS.c.segment_id)
        .join(
            CUSTOMER_CONVERSATIONS,
            and_(
                CUSTOMER_CONVERSATIONS.c.tenant_id == CUSTOMER_SEGMENTS.c.tenant_id,
                CUSTOMER_CONVERSATIONS.c.customer_id == CUSTOMER_SEGMENTS.c.customer_id,
            ),
        )
        .where(
            CUSTOMER_CONVERSATIONS.c.tenant_id == tenant_id,
            CUSTOMER_CONVERSATIONS.c.conversation_id == conversation_id,
        )
    )
    return tuple(sorted(set((await connection.execute(query)).scalars())))


async def set_segment(
    connection: AsyncConnection, tenant_id: str, customer_id: str, segment_id: str, member: bool
) -> None:
    where = (
        CUSTOMER_SEGMENTS.c.tenant_id == tenant_id,
        CUSTOMER_SEGMENTS.c.customer_id == customer_id,
        CUSTOMER_SEGMENTS.c.segment_id == segment_id,
    )
    await connection.execute(delete(CUSTOMER_SEGMENTS).where(*where))
    if member:
        await connection.execute(
            insert(CUSTOMER_SEGMENTS).values(
                tenant_id=tenant_id, customer_id=customer_id, segment_id=segment_id
            )
        )


async def forget_customer(connection: AsyncConnection, tenant_id: str, customer_id: str) -> None:
    """Erasure: drop the customer's segments and links to conversations."""
    for table in (CUSTOMER_SEGMENTS, CUSTOMER_CONVERSATIONS):
        await connection.execute(
            delete(table).where(table.c.tenant_id == tenant_id, table.c.customer_id == customer_id)
        )


async def policy_digest(connection: AsyncConnection, tenant_id: str) -> str | None:
    query = select(POLICY_VERSIONS.c.digest).where(POLICY_VERSIONS.c.tenant_id == tenant_id)
    return await connection.scalar(query)


async def save_policy_digest(connection: AsyncConnection, tenant_id: str, digest: str) -> None:
    await connection.execute(
        delete(POLICY_VERSIONS).where(POLICY_VERSIONS.c.tenant_id == tenant_id)
    )
    await connection.execute(insert(POLICY_VERSIONS).values(tenant_id=tenant_id, digest=digest))


async def delete_clock(connection: AsyncConnection, clock_id: str) -> None:
    await connection.execute(delete(CLOCKS).where(CLOCKS.c.clock_id == clock_id))
