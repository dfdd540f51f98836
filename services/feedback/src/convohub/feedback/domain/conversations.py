"""What the feedback service remembers of a conversation, folded from the log.

`ConversationState` is updated by `fold(state, payload)` for each conversation, routing and
SLA event; the same state yields the metrics record and the BI fact record. Events of
different topics can arrive in any order, so every step tolerates a missing start.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from convohub.contracts.events.common import ParticipantKind
from convohub.contracts.events.conversation import (
    ChannelSwitched,
    ConversationClosed,
    ConversationCloseReason,
    ConversationReopened,
    ConversationResolved,
    ConversationStarted,
    MessageReceived,
    MessageSent,
    PriorityChanged,
)
from convohub.contracts.events.feedback import (
    ConversationFacts,
    FeedbackSentiment,
    SlaOutcomeFact,
)
from convohub.contracts.events.routing import (
    ConversationAssigned,
    ConversationClassified,
    ConversationEscalated,
    ConversationTransferred,
)
from convohub.contracts.events.sla import SlaBreached, SlaMet
from convohub.feedback.domain.metrics import ConversationRecord
from convohub.feedback.domain.sentiment import label_of


@dataclass
class ConversationState:
    """One conversation's facts so far (mutable while folding, then stored)."""

    tenant_id: str
    conversation_id: str
    channel: str | None = None
    channel_id: str | None = None
    channel_path: list[str] = field(default_factory=list)
    customer_id: str | None = None
    language: str | None = None
    started_at: datetime | None = None
    first_response_at: datetime | None = None
    awaiting_reply_since: datetime | None = None
    response_seconds_total: float = 0.0
    response_count: int = 0
    customer_messages: int = 0
    agent_messages: int = 0
    skill_group: str | None = None
    priority: str | None = None
    agent_ids: list[str] = field(default_factory=list)
    current_agent: str | None = None
    assigned_since: datetime | None = None
    handle_seconds: float = 0.0
    transfers: int = 0
    reopens: int = 0
    escalated: bool = False
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    close_reason: str | None = None
    sla: dict[str, dict[str, Any]] = field(default_factory=dict)
    sentiment_total: float = 0.0
    sentiment_count: int = 0
    csat: int | None = None
    nps: int | None = None

    @property
    def is_resolved(self) -> bool:
        return self.resolved_at is not None

    @property
    def sentiment(self) -> FeedbackSentiment | None:
        if not self.sentiment_count:
            return None
        return label_of(self.sentiment_total / self.sentiment_count)

    def copy(self) -> ConversationState:
        return replace(
            self,
            channel_path=list(self.channel_path),
            agent_ids=list(self.agent_ids),
            sla={k: dict(v) for k, v in self.sla.items()},
        )


def _seconds(later: datetime, earlier: datetime) -> float:
    return max(0.0, (later - earlier).total_seconds())


def _stop_handling(state: ConversationState, moment: datetime) -> None:
    if state.assigned_since is not None:
        state.handle_seconds += _seconds(moment, state.assigned_since)
        state.assigned_since = None


def _use_channel(state: ConversationState, channel: str, channel_id: str) -> None:
    state.channel = state.channel or channel
    state.channel_id = channel_id
    if channel not in state.channel_path:
        state.channel_path.append(channel)


def fold(state: ConversationState, payload: Any) -> None:
    """Apply one event's payload to the state (unknown payloads are ignored)."""
    match payload:
        case ConversationStarted():
            state.started_at = payload.started_at
            state.channel = payload.channel.value
            _use_channel(state, payload.channel.value, payload.channel_id)
        case MessageReceived():
            _use_channel(state, payload.channel.value, payload.channel_id)
            state.started_at = state.started_at or payload.received_at
            state.customer_messages += 1
            if state.awaiting_reply_since is None:
                state.awaiting_reply_since = payload.received_at
        case MessageSent():
            if payload.author.kind not in (ParticipantKind.AGENT, ParticipantKind.BOT):
                return  # system messages (surveys, notices) are not replies
            state.agent_messages += 1
            if state.first_response_at is None:
                state.first_response_at = payload.sent_at
            if state.awaiting_reply_since is not None:
                state.response_seconds_total += _seconds(
                    payload.sent_at, state.awaiting_reply_since
                )
                state.response_count += 1
                state.awaiting_reply_since = None
        case ChannelSwitched():
            _use_channel(state, payload.to_channel.value, payload.to_channel_id)
        case PriorityChanged():
            state.priority = payload.to_priority.value
        case ConversationClassified():
            state.skill_group = payload.skill_group
            state.priority = payload.priority.value
        case ConversationAssigned():
            _stop_handling(state, payload.assigned_at)
            state.skill_group = payload.skill_group
            state.current_agent = payload.agent_id
            if payload.agent_id not in state.agent_ids:
                state.agent_ids.append(payload.agent_id)
            if not state.is_resolved:
                state.assigned_since = payload.assigned_at
            elif state.resolved_at is not None and payload.assigned_at < state.resolved_at:
                # Routing and conversation topics interleave freely: the resolution may be
                # read before the assignment that preceded it.
                state.handle_seconds += _seconds(state.resolved_at, payload.assigned_at)
        case ConversationTransferred():
            _stop_handling(state, payload.transferred_at)
            state.transfers += 1
            if payload.to_skill_group is not None:
                state.skill_group = payload.to_skill_group
            if payload.to_agent_id is not None:
                state.current_agent = payload.to_agent_id
                if payload.to_agent_id not in state.agent_ids:
                    state.agent_ids.append(payload.to_agent_id)
                state.assigned_since = payload.transferred_at
        case ConversationEscalated():
            state.escalated = True
        case ConversationResolved():
            _stop_handling(state, payload.resolved_at)
            state.resolved_at = payload.resolved_at
        case ConversationReopened():
            state.reopens += 1
            state.resolved_at = None
            if state.current_agent is not None:
                state.assigned_since = payload.reopened_at
        case ConversationClosed():
            _stop_handling(state, payload.closed_at)
            state.closed_at = payload.closed_at
            state.close_reason = payload.reason.value
        case SlaMet():
            outcome = state.sla.setdefault(payload.metric.value, {"breached": False})
            outcome.update(target_seconds=payload.target_seconds, met=True)
        case SlaBreached():
            outcome = state.sla.setdefault(payload.metric.value, {"met": False})
            outcome.update(target_seconds=payload.target_seconds, breached=True)


def record_of(state: ConversationState) -> ConversationRecord | None:
    """The metrics' view of the conversation (None before its start is known)."""
    if state.started_at is None:
        return None
    first_response = (
        _seconds(state.first_response_at, state.started_at)
        if state.first_response_at is not None
        else None
    )
    abandoned = (
        state.closed_at is not None
        and state.first_response_at is None
        and (state.close_reason in (None, ConversationCloseReason.ABANDONED.value, "expired"))
    )
    return ConversationRecord(
        conversation_id=state.conversation_id,
        started_at=state.started_at,
        channel=state.channel,
        skill_group=state.skill_group,
        agent_id=state.current_agent,
        customer_id=state.customer_id,
        first_response_seconds=first_response,
        response_seconds_total=state.response_seconds_total,
        response_count=state.response_count,
        handle_seconds=state.handle_seconds or None,
        resolved=state.resolved_at is not None,
        resolved_at=state.resolved_at,
        reopen_count=state.reopens,
        transfer_count=state.transfers,
        abandoned=abandoned,
        csat=state.csat,
        nps=state.nps,
    )


def facts_of(state: ConversationState) -> ConversationFacts | None:
    """The BI fact record of a closed conversation (None if its start was never seen)."""
    if state.started_at is None or state.closed_at is None or not state.channel_path:
        return None
    record = record_of(state)
    assert record is not None
    fcr: bool | None = None
    if state.resolved_at is not None:
        fcr = state.reopens == 0 and state.transfers == 0
    return ConversationFacts(
        conversation_id=state.conversation_id,
        customer_id=state.customer_id,
        started_at=state.started_at,
        first_response_at=state.first_response_at,
        resolved_at=state.resolved_at,
        closed_at=state.closed_at,
        first_response_seconds=record.first_response_seconds,
        average_response_seconds=(
            state.response_seconds_total / state.response_count if state.response_count else None
        ),
        handle_seconds=state.handle_seconds if state.agent_ids else None,
        customer_message_count=state.customer_messages,
        agent_message_count=state.agent_messages,
        channel_path=state.channel_path,  # type: ignore[arg-type]
        first_channel=state.channel_path[0],  # type: ignore[arg-type]
        skill_group=state.skill_group,
        priority=state.priority,  # type: ignore[arg-type]
        agent_ids=state.agent_ids,
        transfer_count=state.transfers,
        reopen_count=state.reopens,
        escalated=state.escalated,
        sla_outcomes=[
            SlaOutcomeFact(
                metric=metric,
                target_seconds=int(outcome.get("target_seconds", 0)),
                met=bool(outcome.get("met")),
                breached=bool(outcome.get("breached")),
            )
            for metric, outcome in sorted(state.sla.items())
        ],
        csat=state.csat,
        nps=state.nps,
        sentiment=state.sentiment,
        first_contact_resolution=fcr,
    )
