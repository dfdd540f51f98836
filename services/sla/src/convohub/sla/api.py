"""HTTP routes of the sla service: a conversation's clocks and the at-risk list.

Both are tenant-scoped: another tenant's conversation answers 404, as an unknown one does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from convohub.runtime.http import AnyRole, Problem
from convohub.runtime.service import ServiceContext
from convohub.sla.adapters import repository
from convohub.sla.domain.policies import SlaSection


class ClockView(BaseModel):
    """One SLA clock as of the moment of the request."""

    clock_id: str
    conversation_id: str
    metric: str = Field(description="first_response, next_response or resolution.")
    cycle: int = Field(description="0 for the first clock of its metric, then 1, 2, ...")
    policy_id: str
    state: str = Field(description="running, paused, met or stopped.")
    breached: bool = Field(description="The target has been exceeded.")
    business_hours: bool = Field(description="The clock's calendar is open right now.")
    target_seconds: int
    elapsed_business_seconds: float
    remaining_seconds: float = Field(description="Negative once breached.")
    started_at: datetime
    due_at: datetime
    ended_at: datetime | None
    pause_reason: str | None


class ConversationSlaView(BaseModel):
    conversation_id: str
    clocks: list[ClockView]


class AtRiskView(BaseModel):
    clocks: list[ClockView] = Field(description="Running clocks, least time remaining first.")


def clock_view(row: Any, now: datetime, section: SlaSection) -> ClockView:
    calendar = section.calendar_of(section.policy(row.policy_id))
    counted = timedelta(seconds=row.counted_seconds)
    running_since = repository.as_utc(row.running_since)
    if row.state == "running" and running_since is not None:
        counted += calendar.elapsed(running_since, now)
    elapsed = counted.total_seconds()
    remaining = row.target_seconds - elapsed
    return ClockView(
        clock_id=row.clock_id,
        conversation_id=row.conversation_id,
        metric=row.metric,
        cycle=row.cycle,
        policy_id=row.policy_id,
        state=row.state,
        breached=remaining < 0,
        business_hours=calendar.is_open(now),
        target_seconds=row.target_seconds,
        elapsed_business_seconds=round(elapsed, 3),
        remaining_seconds=round(remaining, 3),
        started_at=repository.as_utc(row.started_at),
        due_at=repository.as_utc(row.due_at),
        ended_at=repository.as_utc(row.ended_at),
        pause_reason=row.pause_reason,
    )


def build_router(
    context: Callable[[], ServiceContext], sections: dict[str, SlaSection]
) -> APIRouter:
    router = APIRouter(tags=["sla"])

    def section(tenant_id: str) -> SlaSection:
        return sections.get(tenant_id) or SlaSection()

    @router.get("/v1/conversations/{conversation_id}/sla", response_model=ConversationSlaView)
    async def conversation_sla(conversation_id: str, principal: AnyRole) -> ConversationSlaView:
        """Every SLA clock of the conversation: target, elapsed business time, remaining,
        state."""
        ctx = context()
        async with ctx.store.reader.connect() as connection:
            state = await repository.load_conversation(
                connection, principal.tenant_id, conversation_id
            )
            rows = await repository.clocks_of(connection, principal.tenant_id, conversation_id)
        if state is None:
            raise Problem(
                404, "not_found", f"no conversation {conversation_id!r} is known to the SLA service"
            )
        now = ctx.clock.now()
        tenant_section = section(principal.tenant_id)
        return ConversationSlaView(
            conversation_id=conversation_id,
            clocks=[clock_view(row, now, tenant_section) for row in rows],
        )

    @router.get("/v1/sla/at-risk", response_model=AtRiskView)
    async def at_risk(
        principal: AnyRole,
        limit: Annotated[int, Query(ge=1, le=500, description="How many clocks.")] = 50,
    ) -> AtRiskView:
        """The tenant's running clocks, least business time remaining first (breached ones
        lead, most overdue first)."""
        ctx = context()
        # Due order approximates remaining-time order; fetch extra and sort exactly.
        async with ctx.store.reader.connect() as connection:
            rows = await repository.running_clocks_by_due(
                connection, principal.tenant_id, limit * 4
            )
        now = ctx.clock.now()
        tenant_section = section(principal.tenant_id)
        views = sorted(
            (clock_view(row, now, tenant_section) for row in rows),
            key=lambda view: view.remaining_seconds,
        )
        return AtRiskView(clocks=views[:limit])

    return router
