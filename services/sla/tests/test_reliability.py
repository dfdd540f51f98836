"""Kill and restart: no warning, breach or escalation is lost or published twice, whether
the host stops mid-stream, is killed with SIGKILL, or two hosts share one PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from convohub.contracts.topics import SLA
from convohub.runtime.service import ManualClock
from convohub.sla.bootstrap import create_service
from convohub.sla.handlers import timers_fired
from services.sla.tests.scenario import AGENT_KEY, emitted, hub_config, labels, started
from tests.support.hub import backend_for, eventually, running_hub

REPO = Path(__file__).resolve().parents[3]
SLA_YAML = """
    sla:
      policies:
        - id: chat
          match: {channels: [web_chat]}
          first_response: 60s
          warnings: [0.5, 0.9]
          escalations:
            - {action: notify_supervisor, after_breach: 10s}
            - {action: route_to_manager, after_breach: 20s}
"""
CONFIG = hub_config(SLA_YAML)
TIMER_EVENTS = [
    "warning:first_response:50",
    "warning:first_response:90",
    "breached:first_response",
    "escalated:first_response:1",
    "escalated:first_response:2",
]


@pytest.fixture
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    # Kafka mode: the two-host test below stops one host mid-stream, which covers it.
    async with backend_for("embedded", request, tmp_path) as backend:
        yield backend


def service() -> Any:
    return create_service(CONFIG, timer_batch_size=7, timer_poll_interval=0.02)


async def count_of(store: Any, label: str) -> int:
    return labels(await emitted(store)).count(label)


async def wait_count(store: Any, label: str, at_least: int) -> None:
    async def enough() -> bool:
        return await count_of(store, label) >= at_least

    await eventually(enough, f"{at_least} x {label}", within=60)


def assert_each_timer_fired_once(events: list[Any], conversations: int) -> None:
    timer_events = [e for e in events if e.type.split(".")[2] != "clock_started"]
    assert len({e.id for e in timer_events}) == len(timer_events), "an event id was emitted twice"
    assert Counter(labels(timer_events)) == Counter(
        {label: conversations for label in TIMER_EVENTS}
    )
    per_conversation = Counter(e.data.conversation_id for e in timer_events)
    assert set(per_conversation.values()) == {len(TIMER_EVENTS)}


async def test_a_host_stopped_mid_stream_and_a_new_one_loses_and_doubles_nothing(
    backend: Any,
) -> None:
    conversations = 25
    clock = ManualClock()
    t0 = clock.now()
    async with running_hub(backend, [service()], CONFIG, clock=clock) as hub:
        await hub.publish(*(started(f"c{n}", t0) for n in range(conversations)))
        store = hub.host.stores["sla"]
        await wait_count(store, "clock_started:first_response", conversations)
        clock.advance(seconds=85)  # every timer but the last escalation is due
        await wait_count(store, "warning:first_response:50", 1)
    # stopped while firing; the second step is due in the meantime
    clock.advance(seconds=10)
    async with running_hub(backend, [service()], CONFIG, clock=clock) as hub:
        store = hub.host.stores["sla"]
        await wait_count(store, "escalated:first_response:2", conversations)
        events = await emitted(store)
        assert_each_timer_fired_once(events, conversations)
        on_log = await hub.wait_for_events(SLA.name, lambda e: True, count=len(events))
        assert sorted(e.id for e in on_log) == sorted(e.id for e in events)


@pytest.mark.integration
async def test_two_hosts_on_one_postgresql_claim_each_timer_once_and_one_stops_mid_stream(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    conversations = 40
    clock = ManualClock()
    t0 = clock.now()
    first, second = service(), service()
    async with (
        backend_for("kafka", request, tmp_path) as backend,
        running_hub(backend, [second], CONFIG, clock=clock) as hub,
    ):
        store = hub.host.stores["sla"]
        async with running_hub(backend, [first], CONFIG, clock=clock):
            await hub.publish(*(started(f"c{n}", t0) for n in range(conversations)))
            await wait_count(store, "clock_started:first_response", conversations)
            clock.advance(seconds=85)  # every timer but the last escalation is due
            await wait_count(store, "warning:first_response:50", 1)
        # the first host stopped while both were firing; the second carries on alone
        clock.advance(seconds=10)
        await wait_count(store, "escalated:first_response:2", conversations)
        assert_each_timer_fired_once(await emitted(store), conversations)
        # every timer row is marked fired exactly once; the hosts' own counters are not
        # summed, since a host cancelled right after its commit never counts that batch
        async with store.engine.connect() as connection:
            assert await timers_fired(connection) == conversations * len(TIMER_EVENTS)


async def test_a_host_killed_with_sigkill_while_firing_loses_and_doubles_nothing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Clocks start in this process at a past moment; a child process on the same log and
    database fires the due timers with the wall clock and is killed mid-way; a new host
    finishes."""
    conversations = 100
    t0 = datetime.now(UTC) - timedelta(minutes=10)  # every timer is due at once
    config_file = tmp_path / "convohub.yaml"
    config_file.write_text(
        "tenants:\n  - id: acme\n    name: Acme\n" + SLA_YAML.replace("    sla:", "    sla:", 1)
    )
    async with backend_for("embedded", request, tmp_path) as backend:
        clock = ManualClock(t0)
        async with running_hub(backend, [service()], CONFIG, clock=clock) as hub:
            await hub.publish(*(started(f"c{n}", t0) for n in range(conversations)))
            store = hub.host.stores["sla"]
            await wait_count(store, "clock_started:first_response", conversations)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.sla.tests.sla_child",
            *backend.child_arguments(),
            "--database",
            await backend.store_url("sla"),
            "--config",
            str(config_file),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            store = await backend.store("sla")
            await wait_count(store, "warning:first_response:50", 5)
            total = len(await emitted(store))
            assert total < conversations * (len(TIMER_EVENTS) + 1), "killed too late"
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        clock = ManualClock(datetime.now(UTC))
        async with running_hub(backend, [service()], CONFIG, clock=clock) as hub:
            store = hub.host.stores["sla"]
            await wait_count(store, "escalated:first_response:2", conversations)
            events = await emitted(store)
            assert_each_timer_fired_once(events, conversations)
            on_log = await hub.wait_for_events(SLA.name, lambda e: True, count=len(events))
            assert sorted(e.id for e in on_log) == sorted(e.id for e in events)


async def test_replaying_the_clock_projection_rebuilds_it_and_fires_nothing_again(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from convohub.runtime.replay import replay

    conversations = 5
    clock = ManualClock()
    t0 = clock.now()
    async with backend_for("embedded", request, tmp_path) as backend:
        async with running_hub(backend, [service()], CONFIG, clock=clock) as hub:
            await hub.publish(*(started(f"c{n}", t0) for n in range(conversations)))
            store = hub.host.stores["sla"]
            await wait_count(store, "clock_started:first_response", conversations)
            clock.advance(seconds=95)
            await wait_count(store, "escalated:first_response:2", conversations)
            before = (await hub.client.get("/v1/sla/at-risk", headers=hub.auth(AGENT_KEY))).json()
            emitted_before = len(await emitted(store))
        result = await replay(
            await backend.bus(), await backend.store("sla"), service().clock_projection
        )
        assert result.records == conversations
        async with running_hub(backend, [service()], CONFIG, clock=clock) as hub:
            await asyncio.sleep(0.5)  # the timer loop ran a few times
            after = (await hub.client.get("/v1/sla/at-risk", headers=hub.auth(AGENT_KEY))).json()
            assert after == before
            assert len(await emitted(hub.host.stores["sla"])) == emitted_before
