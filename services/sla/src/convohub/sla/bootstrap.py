"""Wires the sla service's domain, handlers, adapters and routes together."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import structlog
from fastapi import APIRouter

from convohub.contracts import new_event
from convohub.contracts.envelope import derived_event_id
from convohub.contracts.events.common import Channel
from convohub.contracts.events.sla import QueueServiceLevelMeasured
from convohub.runtime.config import HubConfig, tenant_sections
from convohub.runtime.metrics import RuntimeMetrics
from convohub.runtime.projection import Projection
from convohub.runtime.service import Service
from convohub.sla.adapters import service_levels
from convohub.sla.adapters.gauges import open_clocks
from convohub.sla.adapters.tables import METADATA
from convohub.sla.api import build_router
from convohub.sla.domain.policies import SlaSection
from convohub.sla.domain.service_level import closed_window, service_level_ratio
from convohub.sla.handlers import (
    SOURCE,
    ClockProjection,
    TimerLoop,
    recompute_after_policy_change,
)

log = structlog.get_logger(__name__)


class SlaService(Service):
    """SLA policies, business calendars, durable timers, warnings, breaches, escalations and
    queue service levels."""

    name = "sla"
    metadata = METADATA

    def __init__(
        self,
        sections: dict[str, SlaSection],
        *,
        timer_poll_interval: float = 0.2,
        timer_batch_size: int = 500,
        service_level_interval: float = 5.0,
    ) -> None:
        self.sections = sections
        self.clock_projection = ClockProjection(sections)
        self.timers = TimerLoop(
            lambda: self.context.store,
            lambda: self.context.clock,
            sections,
            batch_size=timer_batch_size,
            poll_interval=timer_poll_interval,
        )
        self.service_level_interval = service_level_interval

    async def on_start(self) -> None:
        fired = self.context.metrics.counter(
            "sla_timers_fired",
            "SLA timers fired: warnings, breaches and escalation steps.",
            ["tenant", "metric", "kind"],
        )

        def count(rows: Sequence[Any]) -> None:
            for row in rows:
                fired.labels(tenant=row.tenant_id, metric=row.metric, kind=row.kind).inc()

        self.timers.on_fired = count
        for tenant_id, section in self.sections.items():
            await recompute_after_policy_change(self.context.store, tenant_id, section)

    def projections(self) -> Sequence[Projection]:
        return (self.clock_projection,)

    async def refresh_metrics(self, metrics: RuntimeMetrics) -> None:
        """Open clocks per tenant, metric and state (running, paused, breached)."""
        async with self.context.store.reader.connect() as connection:
            values = await open_clocks(connection, self.context.clock.now())
        gauge = metrics.gauge(
            "sla_open_clocks",
            "Open SLA clocks by state: running, paused, or breached (past their target).",
            ["tenant", "metric", "state"],
        )
        metrics.set_gauge(gauge, values)

    def routes(self) -> APIRouter:
        return build_router(lambda: self.context, self.sections)

    def background(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return (self.timers.run, self._publish_service_levels_forever)

    async def _publish_service_levels_forever(self) -> None:
        while True:
            await self.publish_service_levels()
            await asyncio.sleep(self.service_level_interval)

    async def publish_service_levels(self) -> int:
        """Publish each configured queue's service level of the latest closed window, once
        per tenant and window; returns how many measurements were emitted."""
        emitted = 0
        now = self.context.clock.now()
        for tenant_id, section in self.sections.items():
            if not section.service_levels:
                continue
            start, end = closed_window(now, timedelta(seconds=section.service_level_window))
            async with self.context.store.unit_of_work() as uow:
                if await service_levels.window_published(uow.connection, tenant_id, start):
                    continue
                counts = await service_levels.queue_counts(uow.connection, tenant_id, start, end)
                for (skill_group, channel), queue in sorted(counts.items()):
                    try:
                        kind = Channel(channel)
                    except ValueError:
                        continue
                    level = section.service_level_for(skill_group, kind)
                    if level is None:
                        continue
                    within = sum(1 for wait in queue.waits if wait <= level.threshold)
                    key = f"queue:{tenant_id}:{skill_group}:{channel}"
                    payload = QueueServiceLevelMeasured(
                        conversation_id=key,
                        skill_group=skill_group,
                        channel=kind,
                        window_start=start,
                        window_end=end,
                        threshold_seconds=level.threshold,
                        answered_within_threshold=within,
                        answered_total=queue.answered,
                        abandoned=queue.abandoned,
                        service_level_ratio=service_level_ratio(
                            within, queue.answered, queue.abandoned
                        ),
                        target_ratio=level.target,
                    )
                    uow.emit(
                        new_event(
                            payload,
                            tenant_id=tenant_id,
                            source=SOURCE,
                            time=end,
                            event_id=derived_event_id(
                                f"{key}|{start.isoformat()}", payload.event_type
                            ),
                        )
                    )
                    emitted += 1
                await service_levels.record_published(uow.connection, tenant_id, start, now)
                await uow.commit()
        return emitted


def create_service(config: HubConfig, **options: float | int) -> SlaService:
    """The sla service for `config`; raises `ConfigError` naming every bad key of every
    tenant's `sla:` section."""
    sections = tenant_sections(config, "sla", SlaSection)
    return SlaService(sections, **options)  # type: ignore[arg-type]
