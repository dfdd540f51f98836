"""Folding a conversation's events into its metrics record and BI facts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from convohub.contracts.catalogue import payload_class, payload_examples
from convohub.feedback.domain.conversations import ConversationState, facts_of, fold, record_of

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def payload(kind: str, **fields: Any) -> Any:
    type_ = f"convohub.{kind}.v1"
    data = {**payload_examples(type_)[0], "conversation_id": "c1", **fields}
    return payload_class(type_).model_validate(data)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def test_a_reopened_and_transferred_conversation() -> None:
    state = ConversationState(tenant_id="acme", conversation_id="c1")
    for p in [
        payload("conversation.started", channel="web_chat", channel_id="web", started_at=at(0)),
        payload(
            "conversation.message_received", channel="web_chat", channel_id="web", received_at=at(0)
        ),
        payload("routing.assigned", agent_id="ag1", skill_group="orders", assigned_at=at(10)),
        payload("conversation.message_sent", author={"kind": "agent", "id": "ag1"}, sent_at=at(30)),
        payload(
            "routing.transferred",
            from_agent_id="ag1",
            to_agent_id="ag2",
            to_skill_group=None,
            transferred_at=at(100),
        ),
        payload(
            "conversation.message_received",
            channel="whatsapp",
            channel_id="wa",
            received_at=at(110),
        ),
        payload(
            "conversation.message_sent", author={"kind": "agent", "id": "ag2"}, sent_at=at(150)
        ),
        payload("conversation.resolved", resolved_at=at(200)),
        payload("conversation.reopened", reopened_at=at(300)),
        payload("conversation.resolved", resolved_at=at(400)),
        payload("sla.met", metric="first_response", target_seconds=60),
        payload("sla.breached", metric="resolution", target_seconds=120),
        payload("conversation.closed", closed_at=at(500)),
    ]:
        fold(state, p)
    record = record_of(state)
    assert record is not None
    assert record.first_response_seconds == 30
    assert (record.response_seconds_total, record.response_count) == (70, 2)
    assert record.handle_seconds == 90 + 100 + 100  # ag1 10-100, ag2 100-200 and 300-400
    assert (record.reopen_count, record.transfer_count, record.agent_id) == (1, 1, "ag2")
    assert record.resolved
    assert not record.abandoned
    facts = facts_of(state)
    assert facts is not None
    assert facts.channel_path == ["web_chat", "whatsapp"]
    assert facts.agent_ids == ["ag1", "ag2"]
    assert facts.first_contact_resolution is False
    outcomes = {o.metric: (o.met, o.breached) for o in facts.sla_outcomes}
    assert outcomes == {"first_response": (True, False), "resolution": (False, True)}


def test_a_conversation_closed_without_a_reply_is_abandoned() -> None:
    state = ConversationState(tenant_id="acme", conversation_id="c1")
    fold(state, payload("conversation.started", started_at=at(0)))
    fold(state, payload("conversation.closed", reason="abandoned", closed_at=at(60)))
    record = record_of(state)
    assert record is not None
    assert record.abandoned
    assert record.first_response_seconds is None
    facts = facts_of(state)
    assert facts is not None
    assert facts.first_contact_resolution is None
    assert facts.handle_seconds is None


def test_nothing_is_recorded_before_the_start_is_known() -> None:
    state = ConversationState(tenant_id="acme", conversation_id="c1")
    fold(state, payload("conversation.resolved", resolved_at=at(10)))
    assert record_of(state) is None
    assert facts_of(state) is None
