"""Shared builders for the router's tests: a hub config, and the events the router consumes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from convohub.contracts import new_event
from convohub.contracts.events.common import Channel
from convohub.contracts.events.conversation import (
    ConversationResolved,
    ConversationStarted,
    MessageReceived,
)
from convohub.runtime.config import HubConfig, parse_config
from tests.support.hub import BACKENDS, backend_for

ADMIN = "admin-key-router-0001"
SUPERVISOR = "supervisor-key-router-01"
KEYS = {f"a{n}": f"agent-key-router-a{n}-0001" for n in range(1, 5)}
OTHER_TENANT = "globex-admin-key-000001"


def hub_config(routing: str) -> HubConfig:
    """A two-tenant config; acme gets `routing` (YAML, indented under `routing:`)."""
    agent_keys = "\n".join(
        f"      - {{key: {key}, role: agent, agent_id: {agent}}}" for agent, key in KEYS.items()
    )
    return parse_config(
        f"""
tenants:
  - id: acme
    name: Acme
    api_keys:
      - {{key: {ADMIN}, role: admin}}
      - {{key: {SUPERVISOR}, role: supervisor}}
{agent_keys}
    routing:
{routing}
  - id: globex
    name: Globex
    api_keys:
      - {{key: {OTHER_TENANT}, role: admin}}
""",
        {},
    )


def agent(name: str, skills: str, *, tier: str = "mid", chat: int = 3, total: int = 5) -> str:
    return (
        f"      - {{id: {name}, name: {name}, tier: {tier}, skills: {{{skills}}}, "
        f"capacity: {{per_channel: {{web_chat: {chat}, email: 5, voice: 1}}, total: {total}}}}}"
    )


def routing(*, agents: list[str], extra: str = "") -> str:
    return (
        """      skill_groups:
        - {id: sales, neighbours: [support]}
        - {id: support, neighbours: [sales]}
        - {id: complaints, min_proficiency: 3}
        - {id: logistics}
        - {id: vip}
      default_skill_group: support
      rules:
        - id: complaint
          match: {keywords: [投诉, complaint]}
          skill_group: complaints
          priority: P2
        - {id: logistics-zh-en, match: {keywords: [物流, 发货, shipping]}, skill_group: logistics}
        - id: order-regex
          match: {regex: "order\\\\s*#\\\\d+"}
          skill_group: support
          priority: P2
        - {id: ivr-sales, match: {ivr: ["1"]}, skill_group: sales}
      complaint_keywords: [angry, 生气]
      vip_skill_group: vip
"""
        + extra
        + "      agents:\n"
        + "\n".join(agents)
    )


def started(
    conversation: str, address: str = "+8613800000001", channel: str = "web_chat", **hints: str
) -> Any:
    return new_event(
        ConversationStarted(
            conversation_id=conversation,
            channel=Channel(channel),
            channel_id="chat-main",
            customer={"channel": channel, "channel_id": "chat-main", "address": address},
            started_at=datetime(2026, 1, 5, 9, tzinfo=UTC),
            routing_hints=hints,
        ),
        tenant_id="acme",
        source="/test",
    )


def message(
    conversation: str, text: str, address: str = "+8613800000001", channel: str = "web_chat"
) -> Any:
    return new_event(
        MessageReceived(
            conversation_id=conversation,
            message_id=f"{conversation}-m1",
            channel=Channel(channel),
            channel_id="chat-main",
            provider_message_id=f"p-{conversation}",
            customer={"channel": channel, "channel_id": "chat-main", "address": address},
            content={"text": text},
            received_at=datetime(2026, 1, 5, 9, tzinfo=UTC),
        ),
        tenant_id="acme",
        source="/test",
    )


def resolved(conversation: str) -> Any:
    return new_event(
        ConversationResolved(
            conversation_id=conversation,
            resolved_by={"kind": "agent", "id": "a1"},
            resolved_at=datetime(2026, 1, 5, 9, 30, tzinfo=UTC),
        ),
        tenant_id="acme",
        source="/test",
    )


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with backend_for(request.param, request, tmp_path) as backend:
        yield backend


@pytest.fixture
async def embedded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with backend_for("embedded", request, tmp_path) as backend:
        yield backend
