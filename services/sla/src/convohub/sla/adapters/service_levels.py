"""Per-queue answer counts of a window, and which windows were published."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.sla.adapters.tables import ANSWERS, SERVICE_LEVEL_WINDOWS


class QueueCounts(NamedTuple):
    answered: int
    abandoned: int
    waits: list[float]


async def window_published(
    connection: AsyncConnection, tenant_id: str, window_start: datetime
) -> bool:
    found = await connection.scalar(
        select(SERVICE_LEVEL_WINDOWS.c.tenant_id).where(
            SERVICE_LEVEL_WINDOWS.c.tenant_id == tenant_id,
            SERVICE_LEVEL_WINDOWS.c.window_start == window_start.astimezone(UTC),
        )
    )
    return found is not None


async def record_published(
    connection: AsyncConnection, tenant_id: str, window_start: datetime, now: datetime
) -> None:
    await connection.execute(
        insert(SERVICE_LEVEL_WINDOWS).values(
            tenant_id=tenant_id,
            window_start=window_start.astimezone(UTC),
            published_at=now.astimezone(UTC),
        )
    )


async def queue_counts(
    connection: AsyncConnection, tenant_id: str, start: datetime, end: datetime
) -> dict[tuple[str, str], QueueCounts]:
    """Answered (with their waits) and abandoned conversations per (skill group, channel)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    answered = await connection.execute(
        select(ANSWERS.c.skill_group, ANSWERS.c.channel, ANSWERS.c.wait_seconds).where(
            ANSWERS.c.tenant_id == tenant_id,
            ANSWERS.c.answered_at >= start,
            ANSWERS.c.answered_at < end,
        )
    )
    abandoned = await connection.execute(
        select(ANSWERS.c.skill_group, ANSWERS.c.channel).where(
            ANSWERS.c.tenant_id == tenant_id,
            ANSWERS.c.abandoned_at >= start,
            ANSWERS.c.abandoned_at < end,
        )
    )
    waits: dict[tuple[str, str], list[float]] = defaultdict(list)
    dropped: dict[tuple[str, str], int] = defaultdict(int)
    for row in answered:
        waits[(row.skill_group or "unassigned", row.channel or "api")].append(row.wait_seconds)
    for row in abandoned:
        dropped[(row.skill_group or "unassigned", row.channel or "api")] += 1
    return {
        queue: QueueCounts(len(waits.get(queue, [])), dropped.get(queue, 0), waits.get(queue, []))
        for queue in set(waits) | set(dropped)
    }
