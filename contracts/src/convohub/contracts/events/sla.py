"""SLA events: per-conversation SLA clocks and their escalations, and queue service levels.

Carried on `convohub.sla.v1`, keyed by conversation id (queue measurements use a synthetic
queue key in that field). The sla service produces them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, Field, model_validator

from convohub.contracts.events.common import Channel
from convohub.contracts.payload import EventPayload, event
from convohub.contracts.topics import SLA


class SlaMetric(StrEnum):
    """What an SLA clock measures."""

    FIRST_RESPONSE = "first_response"
    NEXT_RESPONSE = "next_response"
    RESOLUTION = "resolution"


class SlaPauseReason(StrEnum):
    """Why an SLA clock stopped counting."""

    WAITING_ON_CUSTOMER = "waiting_on_customer"
    OUTSIDE_BUSINESS_HOURS = "outside_business_hours"
    HOLIDAY = "holiday"
    SNOOZED = "snoozed"
    WAITING_ON_THIRD_PARTY = "waiting_on_third_party"


class SlaEscalationAction(StrEnum):
    """What one step of an SLA escalation ladder does."""

    NOTIFY_SUPERVISOR = "notify_supervisor"
    ROUTE_TO_SENIOR = "route_to_senior"
    ROUTE_TO_MANAGER = "route_to_manager"


@event("convohub.sla.clock_started.v1", topic=SLA)
class SlaClockStarted(EventPayload):
    """An SLA clock started for a conversation: a policy's target now applies.

    The sla service emits it when the conversation starts (first response, resolution) or
    when a customer message awaits a reply (next response).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "policy_id": "vip-chat",
                    "metric": "first_response",
                    "target_seconds": 120,
                    "due_at": "2026-11-23T09:02:00Z",
                    "started_at": "2026-11-23T09:00:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(
        description="Conversation id, the partition key.", examples=["conv-7f3a"]
    )
    policy_id: str = Field(description="SLA policy the clock follows.", examples=["vip-chat"])
    metric: SlaMetric = Field(description="What the clock measures.")
    target_seconds: int = Field(ge=1, description="Target in business seconds.", examples=[120])
    due_at: datetime = Field(description="When the target is breached if the clock keeps running.")
    started_at: datetime = Field(description="When the clock started counting.")


@event("convohub.sla.clock_paused.v1", topic=SLA)
class SlaClockPaused(EventPayload):
    """An SLA clock stopped counting, for example while the conversation waits on the customer.

    The sla service emits it; a clock resumed event follows when counting starts again.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "policy_id": "standard-email",
                    "metric": "resolution",
                    "target_seconds": 28800,
                    "due_at": "2026-11-24T05:00:00Z",
                    "reason": "waiting_on_customer",
                    "elapsed_business_seconds": 5400,
                    "paused_at": "2026-11-23T10:30:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(
        description="Conversation id, the partition key.", examples=["conv-7f3a"]
    )
    policy_id: str = Field(description="SLA policy the clock follows.", examples=["standard-email"])
    metric: SlaMetric = Field(description="What the clock measures.")
    target_seconds: int = Field(ge=1, description="Target in business seconds.", examples=[28800])
    due_at: datetime = Field(
        description="When the target would have been breached had the clock not paused; the "
        "clock resumed event carries the new due time."
    )
    reason: SlaPauseReason = Field(description="Why the clock stopped counting.")
    elapsed_business_seconds: int = Field(
        ge=0, description="Business seconds counted so far, up to the pause."
    )
    paused_at: datetime = Field(description="When the clock stopped counting.")


@event("convohub.sla.clock_resumed.v1", topic=SLA)
class SlaClockResumed(EventPayload):
    """A paused SLA clock started counting again, with a new due time.

    The sla service emits it when the reason for the pause ends (the customer replies,
    business hours begin).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "policy_id": "standard-email",
                    "metric": "resolution",
                    "target_seconds": 28800,
                    "due_at": "2026-11-24T06:30:00Z",
                    "resumed_at": "2026-11-23T12:00:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(
        description="Conversation id, the partition key.", examples=["conv-7f3a"]
    )
    policy_id: str = Field(description="SLA policy the clock follows.", examples=["standard-email"])
    metric: SlaMetric = Field(description="What the clock measures.")
    target_seconds: int = Field(ge=1, description="Target in business seconds.", examples=[28800])
    due_at: datetime = Field(description="The new due time, counting from the resumption.")
    resumed_at: datetime = Field(description="When the clock started counting again.")


@event("convohub.sla.warning.v1", topic=SLA)
class SlaWarning(EventPayload):
    """An SLA clock crossed a warning threshold (such as 75% or 90% of its target).

    The sla service emits it once per threshold per clock, so agents and supervisors can act.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "policy_id": "vip-chat",
                    "metric": "first_response",
                    "target_seconds": 120,
                    "due_at": "2026-11-23T09:02:00Z",
                    "threshold_percent": 75,
                    "remaining_seconds": 30,
                    "elapsed_business_seconds": 90,
                    "warned_at": "2026-11-23T09:01:30Z",
                }
            ]
        }
    )

    conversation_id: str = Field(
        description="Conversation id, the partition key.", examples=["conv-7f3a"]
    )
    policy_id: str = Field(description="SLA policy the clock follows.", examples=["vip-chat"])
    metric: SlaMetric = Field(description="What the clock measures.")
    target_seconds: int = Field(ge=1, description="Target in business seconds.", examples=[120])
    due_at: datetime = Field(description="When the target is breached if the clock keeps running.")
    threshold_percent: int = Field(
        gt=0,
        lt=100,
        description="Warning threshold crossed, as a percentage (0-100) of the target elapsed.",
        examples=[75],
    )
    remaining_seconds: int = Field(ge=0, description="Business seconds left before the breach.")
    elapsed_business_seconds: int = Field(ge=0, description="Business seconds counted so far.")
    warned_at: datetime = Field(description="When the threshold was crossed.")


@event("convohub.sla.breached.v1", topic=SLA)
class SlaBreached(EventPayload):
    """An SLA clock passed its due time before the target was met.

    The sla service emits it once per clock; the clock keeps running until it is met.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "policy_id": "vip-chat",
                    "metric": "first_response",
                    "target_seconds": 120,
                    "due_at": "2026-11-23T09:02:00Z",
                    "overdue_seconds": 0,
                    "breached_at": "2026-11-23T09:02:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(
        description="Conversation id, the partition key.", examples=["conv-7f3a"]
    )
    policy_id: str = Field(description="SLA policy the clock follows.", examples=["vip-chat"])
    metric: SlaMetric = Field(description="What the clock measures.")
    target_seconds: int = Field(ge=1, description="Target in business seconds.", examples=[120])
    due_at: datetime = Field(description="When the target was due.")
    overdue_seconds: int = Field(
        ge=0,
        description="Business seconds past the due time when the breach was detected (0 when "
        "detected on time).",
    )
    breached_at: datetime = Field(description="When the breach was detected.")


@event("convohub.sla.met.v1", topic=SLA)
class SlaMet(EventPayload):
    """An SLA clock stopped because its target was achieved (reply sent, conversation resolved).

    The sla service emits it whether or not the clock had breached before; compare
    `elapsed_business_seconds` with `target_seconds`.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "policy_id": "vip-chat",
                    "metric": "first_response",
                    "target_seconds": 120,
                    "due_at": "2026-11-23T09:02:00Z",
                    "elapsed_business_seconds": 95,
                    "met_at": "2026-11-23T09:01:35Z",
                }
            ]
        }
    )

    conversation_id: str = Field(
        description="Conversation id, the partition key.", examples=["conv-7f3a"]
    )
    policy_id: str = Field(description="SLA policy the clock follows.", examples=["vip-chat"])
    metric: SlaMetric = Field(description="What the clock measures.")
    target_seconds: int = Field(ge=1, description="Target in business seconds.", examples=[120])
    due_at: datetime = Field(description="When the target was due.")
    elapsed_business_seconds: int = Field(
        ge=0, description="Business seconds the clock counted, pauses excluded."
    )
    met_at: datetime = Field(description="When the target was achieved.")


@event("convohub.sla.escalated.v1", topic=SLA)
class SlaEscalated(EventPayload):
    """An SLA clock reached a step of its policy's escalation ladder.

    The sla service emits it; the router acts on the routing steps (its escalation event
    names this event's id as its source).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "policy_id": "vip-chat",
                    "metric": "first_response",
                    "target_seconds": 120,
                    "due_at": "2026-11-23T09:02:00Z",
                    "step": 2,
                    "action": "route_to_senior",
                    "target_id": "billing-senior",
                    "escalated_at": "2026-11-23T09:05:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(
        description="Conversation id, the partition key.", examples=["conv-7f3a"]
    )
    policy_id: str = Field(description="SLA policy the clock follows.", examples=["vip-chat"])
    metric: SlaMetric = Field(description="What the clock measures.")
    target_seconds: int = Field(ge=1, description="Target in business seconds.", examples=[120])
    due_at: datetime = Field(description="When the target was (or is) due.")
    step: int = Field(ge=1, description="Step of the escalation ladder reached, 1 the first.")
    action: SlaEscalationAction = Field(description="What this step does.")
    target_id: str | None = Field(
        default=None,
        description="Supervisor or manager agent id, or skill group, the step escalates to; "
        "empty when the routing configuration decides.",
        examples=["billing-senior"],
    )
    escalated_at: datetime = Field(description="When the step was reached.")


@event("convohub.sla.queue_service_level_measured.v1", topic=SLA)
class QueueServiceLevelMeasured(EventPayload):
    """The service level of one queue (skill group and channel kind) over a closed time window.

    The sla service emits it at the end of each measurement window, per queue, not per
    conversation.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "queue:acme:billing:web_chat",
                    "skill_group": "billing",
                    "channel": "web_chat",
                    "window_start": "2026-11-23T09:00:00Z",
                    "window_end": "2026-11-23T09:15:00Z",
                    "threshold_seconds": 20,
                    "answered_within_threshold": 41,
                    "answered_total": 48,
                    "abandoned": 2,
                    "service_level_ratio": 0.82,
                    "target_ratio": 0.8,
                }
            ]
        }
    )

    conversation_id: str = Field(
        description="Not a conversation: the synthetic queue key "
        "`queue:<tenant>:<skill_group>:<channel>`, the partition key, so that the measurements "
        "of one queue stay in order on one partition.",
        examples=["queue:acme:billing:web_chat"],
    )
    skill_group: str = Field(description="Skill group of the queue.", examples=["billing"])
    channel: Channel = Field(description="Channel kind of the queue.")
    window_start: datetime = Field(description="Start of the measurement window (inclusive).")
    window_end: datetime = Field(description="End of the measurement window (exclusive).")
    threshold_seconds: int = Field(
        ge=1, description="Answer-time threshold of the service level, in seconds.", examples=[20]
    )
    answered_within_threshold: int = Field(
        ge=0, description="Conversations answered within the threshold in the window."
    )
    answered_total: int = Field(ge=0, description="Conversations answered in the window.")
    abandoned: int = Field(
        ge=0, description="Conversations abandoned in the queue before an answer in the window."
    )
    service_level_ratio: float = Field(
        ge=0,
        le=1,
        description="Service level as a ratio (0-1): answered_within_threshold divided by "
        "answered_total plus abandoned; 1 when the window had neither.",
        examples=[0.82],
    )
    target_ratio: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="The queue's service-level target as a ratio (0-1), if one is set.",
        examples=[0.8],
    )

    @model_validator(mode="after")
    def _counts_and_window_agree(self) -> QueueServiceLevelMeasured:
        if self.answered_within_threshold > self.answered_total:
            raise ValueError("answered_within_threshold exceeds answered_total")
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        return self
