"""`convohub route-sim --config candidate.yaml`: replay the recorded traffic from the log
through a candidate routing configuration, offline, and compare with what happened."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import select

from convohub.contracts import Envelope, decode_event, from_kafka_record
from convohub.contracts.events.routing import ConversationAssigned, ConversationClassified
from convohub.contracts.topics import AGENT, CONVERSATION, CUSTOMER, ROUTING
from convohub.router.adapters import repository as repo
from convohub.router.adapters.tables import METADATA
from convohub.router.domain.config import OfferMode, RoutingConfig
from convohub.router.handlers import RouterProjection, Workflow
from convohub.runtime.bus.port import EventBus
from convohub.runtime.config import ConfigError, load_config, tenant_sections
from convohub.runtime.hosting import open_bus
from convohub.runtime.settings import RuntimeSettings
from convohub.runtime.store import ProjectionStore, create_engine, migrate_runtime
from convohub.runtime.store.tables import OUTBOX

AGENT_EVENTS = "convohub.agent."


@dataclass
class Outcome:
    """Waits (classified -> assigned, seconds) and assignments per agent."""

    waits: list[float] = field(default_factory=list)
    per_agent: Counter[str] = field(default_factory=Counter)
    unassigned: int = 0

    def row(self, sla_seconds: int) -> list[str]:
        if not self.waits:
            return ["0", "-", "-", "-", "-", str(self.unassigned)]
        ordered = sorted(self.waits)
        within = sum(1 for wait in ordered if wait <= sla_seconds) / len(ordered)
        return [
            str(len(ordered)),
            f"{statistics.fmean(ordered):.1f}",
            f"{ordered[len(ordered) // 2]:.1f}",
            f"{ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]:.1f}",
            f"{within:.0%}",
            str(self.unassigned),
        ]


async def recorded(bus: EventBus, topics: list[str]) -> list[Envelope[Any]]:
    """Every event of `topics` in time order; at the same moment, in the order of `topics`
    (so agents who came online and customers identified at that instant are known to the
    contact that arrived then), then in log order."""
    ranked: list[tuple[Any, int, int, Envelope[Any]]] = []
    for rank, topic in enumerate(topics):
        for partition in range(await bus.partitions(topic)):
            offset = 0
            while records := await bus.read(topic, partition, offset):
                ranked += [
                    (event.time, rank, len(ranked) + n, event)
                    for n, event in enumerate(
                        from_kafka_record(r.value, r.headers)
                        for r in records
                        if r.value is not None  # a tombstone of a compacted topic is no event
                    )
                ]
                offset = records[-1].offset + 1
    return [event for *_, event in sorted(ranked, key=lambda item: item[:3])]


def what_happened(events: list[Envelope[Any]]) -> Outcome:
    outcome, queued = Outcome(), {}
    for event in events:
        data = event.data
        if isinstance(data, ConversationClassified):
            queued.setdefault(data.conversation_id, data.classified_at)
        elif isinstance(data, ConversationAssigned) and data.conversation_id in queued:
            start = queued.pop(data.conversation_id)
            outcome.waits.append((data.assigned_at - start).total_seconds())
            outcome.per_agent[data.agent_id] += 1
    outcome.unassigned = len(queued)
    return outcome


async def simulate(configs: dict[str, RoutingConfig], events: list[Envelope[Any]]) -> Outcome:
    """Apply the recorded traffic in time order to a fresh router store under `configs`
    (offers are taken as accepted at once: nobody answers them offline). Agents of the
    candidate roster that never appear in the recorded agent events are online throughout;
    the others follow their recorded presence."""
    configs = {
        tenant: config.model_copy(update={"offer_mode": OfferMode.AUTO_ACCEPT})
        for tenant, config in configs.items()
    }
    if not events:
        return Outcome()
    on_the_log = {
        (event.tenantid, event.data.agent_id)
        for event in events
        if event.type.startswith(AGENT_EVENTS) and hasattr(event.data, "agent_id")
    }
    with tempfile.TemporaryDirectory() as folder:
        store = ProjectionStore(create_engine(f"sqlite+aiosqlite:///{Path(folder) / 'sim.db'}"))
        await migrate_runtime(store.engine)
        async with store.begin() as connection:
            await connection.run_sync(METADATA.create_all)
        projection = RouterProjection(configs, lambda: events[0].time)
        async with store.unit_of_work() as uow:
            work = Workflow(uow, configs, events[0].time)
            for tenant_id, config in configs.items():
                for agent in config.agents:
                    await repo.add_configured_agent(
                        uow.connection, tenant_id, agent, work.now, name=agent.id
                    )
                    if (tenant_id, agent.id) not in on_the_log:
                        # a hypothetical agent (only in the candidate) works the whole time
                        await repo.set_presence(
                            uow.connection, tenant_id, agent.id, "online", work.now
                        )
            await uow.commit()
        for event in events:
            async with store.unit_of_work() as uow:
                work = Workflow(uow, configs, event.time)
                work.cause = event
                await work_through(projection, work, event)
                for tenant_id in configs:
                    await work.expire_offers(tenant_id)
                    work.dirty.add(tenant_id)
                await work.settle()
                await uow.commit()
        async with store.engine.connect() as connection:
            emitted = (
                await connection.execute(select(OUTBOX.c.value).order_by(OUTBOX.c.seq))
            ).all()
        await store.engine.dispose()
    return what_happened([decode_event(value) for (value,) in emitted])


async def work_through(projection: RouterProjection, work: Workflow, event: Envelope[Any]) -> None:
    await projection._apply_one(work, event.tenantid, event.data)


def route_sim(
    config: Annotated[Path, typer.Option("--config", help="Candidate convohub.yaml to simulate.")],
    sla_seconds: Annotated[int, typer.Option(help="Wait target counted as met.")] = 60,
) -> None:
    """Replay the recorded traffic through a candidate routing configuration and compare waits,
    the share within the SLA target and the load per agent with what happened."""
    try:
        candidate = tenant_sections(load_config(config, {}), "routing", RoutingConfig)
    except ConfigError as error:
        typer.echo(f"convohub route-sim: {error}", err=True)
        raise typer.Exit(code=2) from None

    async def main() -> tuple[Outcome, Outcome]:
        bus = open_bus(RuntimeSettings())
        await bus.start()
        try:
            traffic = await recorded(bus, [AGENT.name, CUSTOMER.name, CONVERSATION.name])
            routing = await recorded(bus, [ROUTING.name])
        finally:
            await bus.stop()
        return what_happened(routing), await simulate(candidate, traffic)

    actual, simulated = asyncio.run(main())
    header = ["", "assigned", "mean wait s", "p50 s", "p90 s", f"<= {sla_seconds}s", "unassigned"]
    rows = [["recorded", *actual.row(sla_seconds)], ["candidate", *simulated.row(sla_seconds)]]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        typer.echo("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
    typer.echo("\nassignments per agent (recorded / candidate)")
    for agent_id in sorted(set(actual.per_agent) | set(simulated.per_agent)):
        typer.echo(
            f"  {agent_id:24} {actual.per_agent[agent_id]:6} / {simulated.per_agent[agent_id]}"
        )
