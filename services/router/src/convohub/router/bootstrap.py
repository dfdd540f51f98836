"""Wires the router service: config, tables, the projection, the API and the sweeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from fastapi import APIRouter

from convohub.router.adapters import repository as repo
from convohub.router.adapters.gauges import read_gauges
from convohub.router.adapters.tables import METADATA
from convohub.router.api import build_routes
from convohub.router.domain.config import RoutingConfig
from convohub.router.handlers import RouterProjection, Workflow, run_command
from convohub.runtime.config import HubConfig, tenant_sections
from convohub.runtime.metrics import RuntimeMetrics
from convohub.runtime.projection import Projection
from convohub.runtime.service import Service


class RouterService(Service):
    name = "router"
    metadata = METADATA

    def __init__(self, configs: dict[str, RoutingConfig], *, sweep_every: float = 1.0) -> None:
        self.configs = configs
        self.sweep_every = sweep_every

    def projections(self) -> Sequence[Projection]:
        return (RouterProjection(self.configs, lambda: self.context.clock.now()),)

    def routes(self) -> APIRouter:
        return build_routes(lambda: self.context, self.configs)

    async def on_start(self) -> None:
        """Load each tenant's configured roster (agents already known keep their presence)."""

        async def roster(work: Workflow) -> None:
            for tenant_id, config in self.configs.items():
                for agent in config.agents:
                    await repo.add_configured_agent(work.connection, tenant_id, agent, work.now)

        await run_command(self.context.store, self.configs, self.context.clock.now(), roster)

    async def sweep(self) -> None:
        """One pass: expire offers, turn silent agents offline, widen and re-dispatch queues."""

        for tenant_id in self.configs:  # one transaction (and router lock) per tenant

            async def run(work: Workflow, tenant_id: str = tenant_id) -> None:
                await work.expire_offers(tenant_id)
                await work.sweep_heartbeats(tenant_id)
                work.dirty.add(tenant_id)

            await run_command(
                self.context.store,
                self.configs,
                self.context.clock.now(),
                run,
                tenants=[tenant_id],
            )

    async def refresh_metrics(self, metrics: RuntimeMetrics) -> None:
        """Queue lengths and longest waits per skill group, agents per presence."""
        async with self.context.store.reader.connect() as connection:
            gauges = await read_gauges(connection, self.context.clock.now())
        queue = metrics.gauge(
            "router_queue_length",
            "Conversations waiting in a queue for an agent.",
            ["tenant", "skill_group"],
        )
        wait = metrics.gauge(
            "router_oldest_queued_seconds",
            "How long the longest-waiting conversation of a queue has waited.",
            ["tenant", "skill_group"],
        )
        agents = metrics.gauge("router_agents", "Agents by presence.", ["tenant", "presence"])
        metrics.set_gauge(queue, gauges.queue_length)
        metrics.set_gauge(wait, gauges.oldest_wait_seconds)
        metrics.set_gauge(agents, gauges.agents)

    def background(self) -> Sequence[Callable[[], Awaitable[None]]]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.sweep_every)
                await self.sweep()

        return (loop,)


def create_service(config: HubConfig, *, sweep_every: float = 1.0) -> RouterService:
    """The router for `config`; ConfigError (with key paths) for an invalid `routing:` section."""
    return RouterService(tenant_sections(config, "routing", RoutingConfig), sweep_every=sweep_every)
