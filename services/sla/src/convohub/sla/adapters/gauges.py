"""The SLA service's Prometheus gauges, read from its tables (`SlaService.refresh_metrics`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.sla.adapters.tables import CLOCKS

BREACHED = "breached"
"""The state label of an open clock past its target (running or paused)."""


async def open_clocks(
    connection: AsyncConnection, now: datetime
) -> dict[tuple[str, str, str], float]:
    """(tenant, metric, state) -> open clocks, state `running`, `paused` or `breached`."""
    state = case(
        (and_(CLOCKS.c.state == "running", CLOCKS.c.due_at <= now), BREACHED),
        (
            and_(CLOCKS.c.state == "paused", CLOCKS.c.counted_seconds >= CLOCKS.c.target_seconds),
            BREACHED,
        ),
        else_=CLOCKS.c.state,
    )
    rows = await connection.execute(
        select(CLOCKS.c.tenant_id, CLOCKS.c.metric, state.label("state"), func.count())
        .where(CLOCKS.c.state.in_(("running", "paused")))
        .group_by(CLOCKS.c.tenant_id, CLOCKS.c.metric, state)
    )
    return {(tenant, metric, label): count for tenant, metric, label, count in rows}
