"""`convohub route-sim`: traffic recorded on the embedded log of a hub running the router is
replayed through a candidate routing configuration and compared with what happened."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from convohub.cli.app import app
from convohub.contracts import TOPICS, new_event
from convohub.contracts.events.common import Channel
from convohub.contracts.events.conversation import (
    ConversationResolved,
    ConversationStarted,
    MessageReceived,
)
from convohub.contracts.topics import ROUTING
from convohub.router.bootstrap import create_service
from convohub.runtime.bus.embedded import EmbeddedBus
from convohub.runtime.bus.port import EventBus
from convohub.runtime.config import parse_config
from convohub.runtime.hosting import EMBEDDED_LOG_FILE
from convohub.runtime.service import ManualClock
from tests.scenarios.backends import EmbeddedBackend
from tests.support.hub import running_hub

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
KEYS = {name: f"agent-key-route-sim-{name}-01" for name in ("a1", "a2", "a3")}


def config_text(agents: list[str], strategy: str = "least_busy") -> str:
    keys = "\n".join(
        f"      - {{key: {key}, role: agent, agent_id: {name}}}" for name, key in KEYS.items()
    )
    roster = "\n".join(
        f"        - {{id: {name}, name: {name}, tier: mid, skills: {{support: 3}}, "
        "capacity: {per_channel: {web_chat: 1}, total: 1}}"
        for name in agents
    )
    return f"""
tenants:
  - id: acme
    name: Acme
    api_keys:
      - {{key: admin-key-route-sim-0001, role: admin}}
{keys}
    routing:
      skill_groups: [{{id: support}}]
      default_skill_group: support
      strategy: {strategy}
      heartbeat_timeout_seconds: 3600
      agents:
{roster}
"""


class DataDirBackend(EmbeddedBackend):
    """The embedded backend without a test namespace: the log file and topic names of
    `convohub up` on that data directory, which is what `route-sim` reads."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.log_path = data_dir / EMBEDDED_LOG_FILE

    async def bus(self) -> EventBus:
        bus = EmbeddedBus(self.log_path)
        await bus.start()
        for topic in TOPICS:
            await bus.create_topic(topic.name, topic.partitions)
        self._buses.append(bus)
        return bus


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def arrival(conversation: str, seconds: int) -> list[Any]:
    customer = {"channel": "web_chat", "channel_id": "chat", "address": f"visitor-{conversation}"}
    return [
        new_event(
            ConversationStarted(
                conversation_id=conversation,
                channel=Channel.WEB_CHAT,
                channel_id="chat",
                customer=customer,
                started_at=at(seconds),
            ),
            tenant_id="acme",
            source="/test",
            time=at(seconds),
        ),
        new_event(
            MessageReceived(
                conversation_id=conversation,
                message_id=f"{conversation}-m1",
                channel=Channel.WEB_CHAT,
                channel_id="chat",
                provider_message_id=f"p-{conversation}",
                customer=customer,
                content={"text": "where is my parcel?"},
                received_at=at(seconds),
            ),
            tenant_id="acme",
            source="/test",
            time=at(seconds),
        ),
    ]


def resolution(conversation: str, seconds: int) -> Any:
    return new_event(
        ConversationResolved(
            conversation_id=conversation,
            resolved_by={"kind": "agent", "id": "a1"},
            resolved_at=at(seconds),
        ),
        tenant_id="acme",
        source="/test",
        time=at(seconds),
    )


async def record(data_dir: Path) -> list[Any]:
    """Two agents with room for one chat each; four conversations 10 s apart, two of them
    wait for a resolution (at 100 s and 200 s). Returns the recorded assignments."""
    config = parse_config(config_text(["a1", "a2"]), {})
    backend = DataDirBackend(data_dir)
    clock = ManualClock(T0)
    try:
        async with running_hub(
            backend, [create_service(config, sweep_every=0.05)], config, clock=clock
        ) as hub:

            async def assigned(count: int) -> list[Any]:
                return await hub.wait_for_events(
                    ROUTING.name, lambda e: e.type == "convohub.routing.assigned.v1", count=count
                )

            for name in ("a1", "a2"):
                response = await hub.client.put(
                    f"/v1/agents/{name}/presence",
                    json={"presence": "online"},
                    headers=hub.auth(KEYS[name]),
                )
                assert response.status_code == 200, response.text
            for n, seconds in enumerate((0, 10, 20, 30), start=1):
                clock.set(at(seconds))
                await hub.publish(*arrival(f"c{n}", seconds))
                if n <= 2:
                    await assigned(n)
                else:
                    await hub.wait_for_events(
                        ROUTING.name,
                        lambda e, c=f"c{n}": (
                            e.type == "convohub.routing.queued.v1" and e.data.conversation_id == c
                        ),
                    )
            clock.set(at(100))
            await hub.publish(resolution("c1", 100))
            await assigned(3)
            clock.set(at(200))
            await hub.publish(resolution("c2", 200))
            return [e.data for e in await assigned(4)]
    finally:
        await backend.close()


def report_rows(output: str) -> dict[str, list[str]]:
    rows = {}
    for line in output.splitlines():
        cells = line.split()
        if cells and cells[0] in ("recorded", "candidate"):
            rows[cells[0]] = cells[1:]
    return rows


def per_agent(output: str) -> dict[str, tuple[int, int]]:
    return {
        match[1]: (int(match[2]), int(match[3]))
        for match in re.finditer(r"^\s+(a\d)\s+(\d+) / (\d+)$", output, re.MULTILINE)
    }


def test_route_sim_compares_a_candidate_with_what_happened(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    data_dir.mkdir()
    recorded = asyncio.run(record(data_dir))
    waits = sorted(
        (e.assigned_at - at(10 * (int(e.conversation_id[1:]) - 1))).total_seconds()
        for e in recorded
    )
    assert waits == [0, 0, 80, 170]

    # The candidate adds a third agent (never seen on the log, so taken to be online).
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(config_text(["a1", "a2", "a3"]))
    result = CliRunner().invoke(
        app,
        ["route-sim", "--config", str(candidate), "--sla-seconds", "60"],
        env={"CONVOHUB_DATA_DIR": str(data_dir), "CONVOHUB_MODE": "embedded"},
    )
    assert result.exit_code == 0, result.output
    rows = report_rows(result.output)
    # assigned, mean wait, p50, p90, share within 60 s, unassigned
    assert rows["recorded"] == ["4", "62.5", "80.0", "170.0", "50%", "0"]
    assert rows["candidate"] == ["4", "17.5", "0.0", "70.0", "75%", "0"]
    loads = per_agent(result.output)
    assert loads["a3"] == (0, 1)
    assert sum(recorded for recorded, _ in loads.values()) == 4
    assert sum(candidate for _, candidate in loads.values()) == 4

    # Round robin without the extra agent changes who works, not the waits.
    same_floor = tmp_path / "round-robin.yaml"
    same_floor.write_text(config_text(["a1", "a2"], strategy="round_robin"))
    again = CliRunner().invoke(
        app,
        ["route-sim", "--config", str(same_floor)],
        env={"CONVOHUB_DATA_DIR": str(data_dir), "CONVOHUB_MODE": "embedded"},
    )
    assert again.exit_code == 0, again.output
    assert report_rows(again.output)["candidate"] == ["4", "62.5", "80.0", "170.0", "50%", "0"]
    assert "a3" not in per_agent(again.output)


def test_route_sim_refuses_an_invalid_candidate(tmp_path: Path) -> None:
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(config_text(["a1"]).replace("default_skill_group: support", "nowhere: 1"))
    result = CliRunner().invoke(
        app,
        ["route-sim", "--config", str(candidate)],
        env={"CONVOHUB_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 2
    assert "nowhere" in result.output
