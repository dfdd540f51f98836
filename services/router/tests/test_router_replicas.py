"""Two router replicas (two hosts on one log and one database) under a burst of conversations,
redeliveries and resolutions: no agent is given more than its capacity and no conversation is
assigned (or offered) twice. Runs on the embedded log and on Kafka with PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import pytest

from convohub.contracts.topics import ROUTING
from convohub.router.bootstrap import create_service
from tests.support.hub import eventually, running_hub

from .conftest import KEYS, SUPERVISOR, agent, hub_config, message, resolved, routing, started

CAPACITY = 3
AGENTS = ["a1", "a2", "a3", "a4"]
BURST = 30


@pytest.mark.parametrize("mode", ["auto_accept", "offer"])
async def test_two_replicas_never_over_assign(backend: Any, mode: str) -> None:
    config = hub_config(
        routing(
            agents=[agent(name, "support: 3", chat=CAPACITY, total=CAPACITY) for name in AGENTS],
            extra=f"      offer_mode: {mode}\n      offer_expiry_seconds: 600\n"
            # no heartbeats in this test: on a loaded machine it can outlast the default 90 s
            "      heartbeat_timeout_seconds: 3600\n",
        )
    )
    async with AsyncExitStack() as stack:
        hubs = [
            await stack.enter_async_context(
                running_hub(backend, [create_service(config, sweep_every=0.1)], config)
            )
            for _ in range(2)
        ]
        for index, name in enumerate(AGENTS):
            response = await hubs[index % 2].client.put(
                f"/v1/agents/{name}/presence",
                json={"presence": "online"},
                headers=hubs[0].auth(KEYS[name]),
            )
            assert response.status_code == 200, response.text
        burst = []
        for n in range(BURST):
            burst += [started(f"b{n}", f"+{n}"), message(f"b{n}", "hello", f"+{n}")]
        await hubs[0].publish(*burst)
        await hubs[1].publish(*burst[: BURST // 2])  # a producer's retry: the same events again
        placed = (
            "convohub.routing.assigned.v1"
            if mode == "auto_accept"
            else "convohub.routing.offered.v1"
        )
        first = await hubs[0].wait_for_events(
            ROUTING.name, lambda e: e.type == placed, count=CAPACITY * len(AGENTS), within=60
        )
        await asyncio.sleep(0.5)  # anything beyond capacity would show up by now
        first = [e for e in await hubs[0].events(ROUTING.name) if e.type == placed]
        assert len(first) == CAPACITY * len(AGENTS)
        assert all(n == CAPACITY for n in Counter(e.data.agent_id for e in first).values())
        assert all(n == 1 for n in Counter(e.data.conversation_id for e in first).values())

        if mode == "offer":
            for index, offered in enumerate(first):
                accepted = await hubs[index % 2].client.post(
                    f"/v1/offers/{offered.data.offer_id}/accept",
                    headers=hubs[0].auth(KEYS[offered.data.agent_id]),
                )
                assert accepted.status_code == 200, accepted.text
            await hubs[0].wait_for_events(
                ROUTING.name,
                lambda e: e.type == "convohub.routing.assigned.v1",
                count=len(first),
                within=30,
            )
        # Free one slot per agent, twice over (with a redelivered resolution), on both replicas.
        done = [e.data.conversation_id for e in first][::CAPACITY]
        await hubs[1].publish(*(resolved(c) for c in done))
        await hubs[0].publish(*(resolved(c) for c in done))
        total = CAPACITY * len(AGENTS) + len(done)
        await hubs[0].wait_for_events(
            ROUTING.name, lambda e: e.type == placed, count=total, within=60
        )
        await asyncio.sleep(0.5)
        events = [e for e in await hubs[0].events(ROUTING.name) if e.type == placed]
        assert len(events) == total
        assert all(n == 1 for n in Counter(e.data.conversation_id for e in events).values())
        holding = Counter(e.data.agent_id for e in events if e.data.conversation_id not in done)
        assert all(n <= CAPACITY for n in holding.values()), holding

        async def loads_settled() -> Any:
            response = await hubs[1].client.get("/v1/agents", headers=hubs[1].auth(SUPERVISOR))
            loads = {a["agent_id"]: a["load"] for a in response.json()["agents"]}
            return loads if loads == dict.fromkeys(AGENTS, CAPACITY) else None

        await eventually(loads_settled, "every agent exactly at capacity")
        queues = (await hubs[0].client.get("/v1/queues", headers=hubs[0].auth(SUPERVISOR))).json()
        support = next(q for q in queues["queues"] if q["skill_group"] == "support")
        assert support["length"] == BURST - total
