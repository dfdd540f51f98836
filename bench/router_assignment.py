"""Router assignment throughput and latency against raw SQL doing the same writes.

Usage: uv run python bench/router_assignment.py [--agents 1000] [--conversations 10000]
           [--batch 500] [--rate 5 10 20] [--seconds 10] [--store sqlite|postgresql]

On SQLite (temporary files; the embedded mode's store) or PostgreSQL (two temporary
databases on the server of `DATABASE_URL`, dropped afterwards: `eval "$(scripts/infra/infra
env)"`), with `--agents` agents online (web chat capacity 12 each):

1. Fill: `--conversations` conversations arrive in batches of `--batch`, each batch one unit
   of work as the router's projection applies it (create, classify, queue, choose an agent
   with the least-busy strategy, arbitrate capacity with conditional updates, emit classified,
   queued and assigned events into the outbox). Prints decisions per second against the
   baseline, which does the same rows' worth of raw SQL per conversation (an insert and a
   conditional capacity update, agent chosen round robin) in the same batches, with no
   routing decision and no events. These conversations stay open.
2. Steady state: on top of those open conversations, new ones arrive at each `--rate` per
   second in turn, for `--seconds` each, while as many open ones are resolved (capacity
   freed), so 10,000 conversations stay open. A consumer loop
   takes everything that has arrived (at most `--batch`) as one batch, like the projection
   runner does. The latency of a conversation is from its arrival to the commit of the unit
   of work that assigned it (the queued -> assigned event gap a consumer would see, before
   broker delivery). Prints p50/p99, and the full (generation 2) garbage collections that
   ran during the phase with the longest: each one stops the process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from sla_timers import admin
from sqlalchemy import insert, make_url, update

from convohub.contracts.events.agent import Presence, PresenceChangeReason
from convohub.contracts.events.common import AgentTier, Channel
from convohub.contracts.events.conversation import ConversationStarted
from convohub.router.adapters import repository as repo
from convohub.router.adapters.tables import AGENTS, CONVERSATIONS, METADATA
from convohub.router.domain.config import RoutingConfig
from convohub.router.handlers import Workflow, run_command
from convohub.runtime.store import ProjectionStore, create_engine, migrate_runtime

NOW = datetime(2026, 1, 5, 9, tzinfo=UTC)
CAPACITY = 12
"""Web chat capacity of each agent: 1,000 agents hold 10,000 open conversations with room."""


async def open_store(url: str) -> ProjectionStore:
    store = ProjectionStore(create_engine(url))
    await migrate_runtime(store.engine)
    async with store.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    return store


async def roster(store: ProjectionStore, configs: dict[str, RoutingConfig], agents: int) -> None:
    async def run(work: Workflow) -> None:
        for n in range(agents):
            agent_id = f"agent-{n:05d}"
            await repo.upsert_agent(
                work.connection,
                "acme",
                agent_id,
                name=agent_id,
                tier=AgentTier.MID,
                skills={"support": 1 + n % 5},
                capacity_total=CAPACITY,
                per_channel={"web_chat": CAPACITY},
                now=NOW,
            )
            await work.presence(
                "acme",
                agent_id,
                Presence.ONLINE,
                PresenceChangeReason.LOGIN,
                agent_id,
                publish=False,
            )
        work.dirty.clear()

    await run_command(store, configs, NOW, run)


def started(n: int) -> ConversationStarted:
    return ConversationStarted(
        conversation_id=f"conv-{n:06d}",
        channel=Channel.WEB_CHAT,
        channel_id="chat",
        customer={"channel": "web_chat", "channel_id": "chat", "address": f"visitor-{n}"},
        started_at=NOW,
    )


async def fill(
    store: ProjectionStore, configs: dict[str, RoutingConfig], total: int, batch: int
) -> tuple[int, float]:
    """Phase 1: `total` conversations in batches of `batch`; (assigned, seconds)."""
    assigned = 0
    began = time.perf_counter()
    for first in range(0, total, batch):
        numbers = range(first, min(total, first + batch))

        async def apply(work: Workflow, numbers: range = numbers) -> None:
            for n in numbers:
                await arrive(work, n)

        assigned += await run_command(store, configs, NOW, _and_count(apply))
    return assigned, time.perf_counter() - began


async def arrive(work: Workflow, n: int) -> None:
    event = started(n)
    await work.conversation_started("acme", event)
    await work.contact("acme", event.conversation_id, Channel.WEB_CHAT, text="hello")


async def steady(
    store: ProjectionStore,
    configs: dict[str, RoutingConfig],
    first: int,
    open_ids: list[int],
    rate: float,
    seconds: float,
    batch: int,
) -> tuple[list[float], list[int]]:
    """Phase 2: arrivals and resolutions at `rate`; latencies of the assigned arrivals and
    the sizes of the batches the consumer loop took."""
    latencies: list[float] = []
    sizes: list[int] = []
    count = int(rate * seconds)
    due = [i / rate for i in range(count)]  # arrival times, seconds after the start
    taken = 0
    began = time.perf_counter()
    while taken < count:
        now = time.perf_counter() - began
        ready = [i for i in range(taken, min(count, taken + batch)) if due[i] <= now]
        if not ready:
            await asyncio.sleep(max(0.0, due[taken] - now))
            continue
        taken += len(ready)
        sizes.append(len(ready))
        resolved = [open_ids.pop(0) for _ in ready]

        async def apply(
            work: Workflow, ready: list[int] = ready, resolved: list[int] = resolved
        ) -> None:
            for i, done in zip(ready, resolved, strict=True):
                await work.finished("acme", f"conv-{done:06d}")
                await arrive(work, first + i)

        placed = await run_command(store, configs, NOW, _and_count(apply))
        committed = time.perf_counter() - began
        latencies += [committed - due[i] for i in ready[:placed]]
        open_ids += [first + i for i in ready]
    return latencies, sizes


def _and_count(apply):  # type: ignore[no-untyped-def]
    async def run(work: Workflow) -> int:
        await apply(work)
        placed = 0
        while work.dirty:
            placed += await work.dispatch(work.dirty.pop())
        return placed

    return run


async def raw_run(store: ProjectionStore, agents: int, total: int, batch: int) -> float:
    began = time.perf_counter()
    for first in range(0, total, batch):
        async with store.engine.begin() as connection:
            for n in range(first, min(total, first + batch)):
                agent_id = f"agent-{n % agents:05d}"
                await connection.execute(
                    insert(CONVERSATIONS).values(
                        conversation_id=f"conv-{n:06d}",
                        tenant_id="acme",
                        channel="web_chat",
                        state="assigned",
                        agent_id=agent_id,
                        excluded=[],
                        history=[],
                        attempts=1,
                        vip=False,
                    )
                )
                await connection.execute(
                    update(AGENTS)
                    .where(
                        AGENTS.c.tenant_id == "acme",
                        AGENTS.c.agent_id == agent_id,
                        AGENTS.c.load < AGENTS.c.capacity,
                    )
                    .values(load=AGENTS.c.load + 1)
                )
    return time.perf_counter() - began


@asynccontextmanager
async def database_urls(store: str) -> AsyncIterator[tuple[str, str]]:
    """URLs of two empty databases (the baseline's and the router's), removed afterwards."""
    if store == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield tuple(f"sqlite+aiosqlite:///{Path(folder) / n}" for n in ("raw.db", "router.db"))
        return
    server = os.environ.get("DATABASE_URL")
    if not server:
        raise SystemExit('no DATABASE_URL: eval "$(scripts/infra/infra env)" first')
    names = [f"bench_router_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("raw", "router")]
    for name in names:
        await admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield tuple(
            make_url(server).set(database=name).render_as_string(hide_password=False)
            for name in names
        )
    finally:
        for name in names:
            await admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class FullCollections:
    """The generation 2 garbage collections while `measuring`, with their durations."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.measuring = False
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2 or not self.measuring:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._began)

    def take(self) -> list[float]:
        pauses, self.pauses = self.pauses, []
        return pauses


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--conversations", type=int, default=10_000, help="open ones (fill)")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=[5, 10, 20],
        help="arrivals per second of each steady-state phase, run one after the other",
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    configs = {
        "acme": RoutingConfig.model_validate(
            {"skill_groups": [{"id": "support"}], "default_skill_group": "support"}
        )
    }
    collections = FullCollections()
    async with database_urls(args.store) as (raw_url, router_url):
        raw_store = await open_store(raw_url)
        await roster(raw_store, configs, args.agents)
        raw_seconds = await raw_run(raw_store, args.agents, args.conversations, args.batch)
        await raw_store.engine.dispose()
        store = await open_store(router_url)
        await roster(store, configs, args.agents)
        assigned, seconds = await fill(store, configs, args.conversations, args.batch)
        open_ids = list(range(args.conversations))
        next_id = args.conversations
        phases = []
        for rate in args.rate:
            collections.measuring = True
            latencies, sizes = await steady(
                store, configs, next_id, open_ids, rate, args.seconds, args.batch
            )
            collections.measuring = False
            phases.append((latencies, sizes, collections.take()))
            next_id += int(rate * args.seconds)
        await store.engine.dispose()
    raw_rate = args.conversations / raw_seconds
    rate = assigned / seconds
    print(f"{args.agents:,} agents, {args.conversations:,} open conversations, {args.store}")
    print(f"fill, batches of {args.batch}:")
    print(f"  raw SQL baseline (insert + conditional update) {raw_rate:>10,.0f} /s")
    print(
        f"  router decisions (assigned)                    {rate:>10,.0f} /s"
        f"   ratio {rate / raw_rate:.2f}"
    )
    print(f"  assigned {assigned:,} of {args.conversations:,}")
    for rate, (latencies, sizes, pauses) in zip(args.rate, phases, strict=True):
        print(
            f"steady state, {rate:g} arrivals/s and as many resolutions for {args.seconds:g} s"
            f" (batches of {statistics.fmean(sizes):.1f} on average, at most {max(sizes)}):"
        )
        print(f"  assigned {len(latencies):,} of {int(rate * args.seconds):,}")
        if latencies:
            print(
                f"  arrival -> assigned (committed) p50 {percentile(latencies, 0.5) * 1000:,.0f}"
                f" ms  p99 {percentile(latencies, 0.99) * 1000:,.0f} ms"
                f"  max {max(latencies) * 1000:,.0f} ms"
            )
        print(
            f"  full garbage collections: {len(pauses)}"
            + (f", longest {max(pauses) * 1000:,.0f} ms" if pauses else "")
        )


if __name__ == "__main__":
    asyncio.run(main())
