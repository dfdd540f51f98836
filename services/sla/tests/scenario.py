"""Config and events shared by the sla service tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from convohub.contracts import Envelope, new_event
from convohub.contracts.events.common import (
    Channel,
    ChannelIdentity,
    MessageContent,
    Participant,
    ParticipantKind,
    Priority,
)
from convohub.contracts.events.conversation import (
    ConversationResolved,
    ConversationStarted,
    MessageReceived,
    MessageSent,
)
from convohub.contracts.events.routing import (
    ClassificationRuleKind,
    ClassificationRuleMatch,
    ConversationClassified,
)
from convohub.runtime.config import parse_config

AGENT_KEY = "acme-agent-key-0123456789"
OTHER_KEY = "globex-admin-key-0123456789"

SLA_YAML = """
    sla:
      policies:
        - id: chat
          match: {channels: [web_chat]}
          first_response: 60s
          next_response: 60s
          resolution: 1h
          warnings: [0.5]
          escalations:
            - {action: notify_supervisor, after_breach: 30s, metrics: [first_response]}
            - {action: route_to_senior, after_breach: 60s, target_id: senior,
               metrics: [first_response]}
        - id: p1
          match: {priorities: [P1]}
          first_response: 20s
"""


def hub_config(sla: str = SLA_YAML) -> Any:
    return parse_config(
        f"""
tenants:
  - id: acme
    name: Acme
    api_keys:
      - {{key: {AGENT_KEY}, role: agent}}
{sla}
  - id: globex
    name: Globex
    api_keys:
      - {{key: {OTHER_KEY}, role: admin}}
""",
        {},
    )


CUSTOMER = ChannelIdentity(channel=Channel.WEB_CHAT, channel_id="web", address="visitor-1")


def started(conversation: str, at: datetime, tenant: str = "acme") -> Envelope[Any]:
    payload = ConversationStarted(
        conversation_id=conversation,
        channel=Channel.WEB_CHAT,
        channel_id="web",
        customer=CUSTOMER,
        started_at=at,
    )
    return new_event(payload, tenant_id=tenant, source="/test", time=at)


def customer_message(conversation: str, number: int, at: datetime) -> Envelope[Any]:
    payload = MessageReceived(
        conversation_id=conversation,
        message_id=f"{conversation}-in-{number}",
        channel=Channel.WEB_CHAT,
        channel_id="web",
        provider_message_id=f"p-{conversation}-{number}",
        customer=CUSTOMER,
        content=MessageContent(text="hello"),
        received_at=at,
    )
    return new_event(payload, tenant_id="acme", source="/test", time=at)


def agent_reply(conversation: str, number: int, at: datetime) -> Envelope[Any]:
    payload = MessageSent(
        conversation_id=conversation,
        message_id=f"{conversation}-out-{number}",
        channel=Channel.WEB_CHAT,
        channel_id="web",
        author=Participant(kind=ParticipantKind.AGENT, id="agent-1"),
        recipient=CUSTOMER,
        content=MessageContent(text="hi"),
        sent_at=at,
    )
    return new_event(payload, tenant_id="acme", source="/test", time=at)


def resolved(conversation: str, at: datetime) -> Envelope[Any]:
    payload = ConversationResolved(
        conversation_id=conversation,
        resolved_by=Participant(kind=ParticipantKind.AGENT, id="agent-1"),
        resolved_at=at,
    )
    return new_event(payload, tenant_id="acme", source="/test", time=at)


def classified(conversation: str, priority: Priority, at: datetime, vip: bool = False) -> Any:
    payload = ConversationClassified(
        conversation_id=conversation,
        skill_group="billing",
        priority=priority,
        matched_rule=ClassificationRuleMatch(rule_id="r", kind=ClassificationRuleKind.KEYWORD),
        vip=vip,
        classified_at=at,
    )
    return new_event(payload, tenant_id="acme", source="/test", time=at)


async def emitted(store: Any, conversation: str | None = None) -> list[Envelope[Any]]:
    """The SLA events the service committed to its outbox (each goes to the log once)."""
    from sqlalchemy import select

    from convohub.contracts.catalogue import decode_event
    from convohub.contracts.topics import SLA
    from convohub.runtime.store import OUTBOX

    async with store.engine.connect() as connection:
        rows = await connection.execute(
            select(OUTBOX.c.value).where(OUTBOX.c.topic == SLA.name).order_by(OUTBOX.c.seq)
        )
        events = [decode_event(row.value) for row in rows]
    return [
        event
        for event in events
        if conversation is None or event.data.conversation_id == conversation
    ]


def labels(events: list[Envelope[Any]]) -> list[str]:
    """`warning:first_response:50`, `breached:first_response`, ... one per event."""
    found = []
    for event in events:
        data = event.data
        label = f"{event.type.split('.')[2]}:{data.metric.value}"
        if hasattr(data, "threshold_percent"):
            label += f":{data.threshold_percent}"
        if hasattr(data, "step"):
            label += f":{data.step}"
        found.append(label)
    return found
