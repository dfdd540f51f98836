"""The sla service through the log and HTTP, on the embedded log and on Kafka+PostgreSQL:
clocks start, warn, breach, escalate and are met exactly once; the API serves them."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from convohub.contracts.topics import SLA
from convohub.runtime.service import ManualClock
from convohub.sla.bootstrap import create_service
from services.sla.tests.scenario import (
    AGENT_KEY,
    OTHER_KEY,
    agent_reply,
    customer_message,
    emitted,
    hub_config,
    labels,
    started,
)
from tests.support.hub import BACKENDS, backend_for, eventually, running_hub

CONFIG = hub_config()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with backend_for(request.param, request, tmp_path) as backend:
        yield backend


async def wait_for(hub: Any, label: str, count: int = 1) -> None:
    store = hub.host.stores["sla"]

    async def enough() -> bool:
        return labels(await emitted(store)).count(label) >= count

    await eventually(enough, f"{count} x {label}")


async def test_a_chat_clock_warns_breaches_escalates_and_is_met_once(backend: Any) -> None:
    clock = ManualClock()
    t0 = clock.now()
    service = create_service(CONFIG, timer_poll_interval=0.05)
    async with running_hub(backend, [service], CONFIG, clock=clock) as hub:
        await hub.publish(started("c1", t0))
        await wait_for(hub, "clock_started:resolution")

        clock.advance(seconds=31)  # past 50% of the 60 s first response
        await wait_for(hub, "warning:first_response:50")
        clock.advance(seconds=60)  # 91 s: breached, and 30 s after the breach: step 1
        await wait_for(hub, "escalated:first_response:1")
        await wait_for(hub, "breached:first_response")

        response = await hub.client.get("/v1/conversations/c1/sla", headers=hub.auth(AGENT_KEY))
        assert response.status_code == 200, response.text
        clocks = {c["metric"]: c for c in response.json()["clocks"]}
        assert clocks["first_response"]["state"] == "running"
        assert clocks["first_response"]["breached"] is True
        assert clocks["first_response"]["elapsed_business_seconds"] == 91
        assert clocks["first_response"]["remaining_seconds"] == -31
        assert clocks["resolution"]["remaining_seconds"] == 3600 - 91

        at_risk = await hub.client.get("/v1/sla/at-risk", headers=hub.auth(AGENT_KEY))
        assert [c["metric"] for c in at_risk.json()["clocks"]] == ["first_response", "resolution"]
        hidden = await hub.client.get("/v1/conversations/c1/sla", headers=hub.auth(OTHER_KEY))
        assert hidden.status_code == 404
        assert hidden.json()["code"] == "not_found"
        assert (await hub.client.get("/v1/sla/at-risk", headers=hub.auth(OTHER_KEY))).json() == {
            "clocks": []
        }

        clock.advance(seconds=9)  # 100 s: the agent replies before step 2 (at 120 s)
        await hub.publish(agent_reply("c1", 1, clock.now()))
        await wait_for(hub, "met:first_response")
        await wait_for(hub, "clock_paused:resolution")
        clock.advance(seconds=300)
        await hub.publish(customer_message("c1", 1, clock.now()))
        await wait_for(hub, "clock_resumed:resolution")
        await wait_for(hub, "clock_started:next_response")
        seen = Counter(labels(await emitted(hub.host.stores["sla"], "c1")))
        # and the log carries exactly what the outbox holds, each event once
        outbox = {event.id for event in await emitted(hub.host.stores["sla"])}
        on_log = await hub.wait_for_events(SLA.name, lambda e: True, count=len(outbox))
        assert sorted(event.id for event in on_log) == sorted(outbox)

    assert seen == Counter(
        {
            "clock_started:first_response": 1,
            "clock_started:resolution": 1,
            "warning:first_response:50": 1,
            "breached:first_response": 1,
            "escalated:first_response:1": 1,
            "met:first_response": 1,
            "clock_paused:resolution": 1,
            "clock_resumed:resolution": 1,
            "clock_started:next_response": 1,
        }
    )


async def test_unknown_conversations_and_bad_queries_are_problems(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with (
        backend_for("embedded", request, tmp_path) as backend,
        running_hub(backend, [create_service(CONFIG)], CONFIG) as hub,
    ):
        missing = await hub.client.get("/v1/conversations/nope/sla", headers=hub.auth(AGENT_KEY))
        bad = await hub.client.get("/v1/sla/at-risk?limit=0", headers=hub.auth(AGENT_KEY))
        anonymous = await hub.client.get("/v1/sla/at-risk")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (bad.status_code, bad.json()["errors"][0]["field"]) == (422, "query.limit")
    assert anonymous.status_code == 401
