"""The router's Prometheus gauges, read from its tables (`RouterService.refresh_metrics`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.router.adapters.tables import AGENTS, CONVERSATIONS

UNCLASSIFIED = "unclassified"
"""The skill-group label of queued conversations not classified yet."""


@dataclass(frozen=True)
class RouterGauges:
    queue_length: dict[tuple[str, str], float]
    """(tenant, skill group) -> conversations waiting in the queue."""
    oldest_wait_seconds: dict[tuple[str, str], float]
    """(tenant, skill group) -> how long the longest-waiting conversation has waited."""
    agents: dict[tuple[str, str], float]
    """(tenant, presence) -> agents."""


async def read_gauges(connection: AsyncConnection, now: datetime) -> RouterGauges:
    """One grouped query per gauge (they scan indexes of small tables)."""
    skill = func.coalesce(CONVERSATIONS.c.skill_group, UNCLASSIFIED)
    queued = await connection.execute(
        select(
            CONVERSATIONS.c.tenant_id,
            skill.label("skill_group"),
            func.count(),
            func.min(CONVERSATIONS.c.queued_at),
        )
        .where(CONVERSATIONS.c.state == "queued")
        .group_by(CONVERSATIONS.c.tenant_id, skill)
    )
    lengths: dict[tuple[str, str], float] = {}
    waits: dict[tuple[str, str], float] = {}
    for tenant_id, skill_group, count, oldest in queued:
        lengths[(tenant_id, skill_group)] = count
        if oldest is not None:
            if oldest.tzinfo is None:  # SQLite hands back naive UTC
                oldest = oldest.replace(tzinfo=UTC)
            waits[(tenant_id, skill_group)] = max((now - oldest).total_seconds(), 0.0)
    agents = await connection.execute(
        select(AGENTS.c.tenant_id, AGENTS.c.presence, func.count()).group_by(
            AGENTS.c.tenant_id, AGENTS.c.presence
        )
    )
    return RouterGauges(
        queue_length=lengths,
        oldest_wait_seconds=waits,
        agents={(tenant_id, presence): count for tenant_id, presence, count in agents},
    )
