"""Feedback events: surveys and their answers, sentiment analysis, closed-loop follow-ups, and
the fact record of each closed conversation.

Carried on `convohub.feedback.v1`, keyed by conversation id, except `ConversationFacts`, which
is carried on `convohub.conversation-facts.v1`, also keyed by conversation id. The feedback
service produces them all.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, Field

from convohub.contracts.events.common import Channel, Priority
from convohub.contracts.payload import EventPayload, ValueObject, event, personal
from convohub.contracts.topics import CONVERSATION_FACTS, FEEDBACK


class SurveyKind(StrEnum):
    """A survey question: customer satisfaction (1–5) or net promoter score (0–10)."""

    CSAT = "csat"
    NPS = "nps"


class SurveyDelivery(StrEnum):
    """How a survey reached the customer."""

    CHANNEL_MESSAGE = "channel_message"
    WEB_LINK = "web_link"


class SurveyAnswerMethod(StrEnum):
    """How the customer answered a survey."""

    CHANNEL_REPLY = "channel_reply"
    WEB_LINK = "web_link"


class FeedbackSourceKind(StrEnum):
    """What a sentiment analysis was run on."""

    SURVEY_ANSWER = "survey_answer"
    CUSTOMER_MESSAGE = "customer_message"


class FeedbackSentiment(StrEnum):
    """Sentiment of a text or a conversation, on a five-point scale."""

    VERY_NEGATIVE = "very_negative"
    NEGATIVE = "negative"
    NEUTRAL = "neutral"
    POSITIVE = "positive"
    VERY_POSITIVE = "very_positive"


class FollowUpTrigger(StrEnum):
    """What made the feedback service ask for a follow-up."""

    LOW_CSAT = "low_csat"
    NPS_DETRACTOR = "nps_detractor"
    NEGATIVE_SENTIMENT = "negative_sentiment"


class FollowUpOutcome(StrEnum):
    """How a follow-up ended."""

    RESOLVED = "resolved"
    CUSTOMER_UNREACHABLE = "customer_unreachable"
    NO_ACTION_NEEDED = "no_action_needed"
    ESCALATED = "escalated"


class SlaOutcomeFact(ValueObject):
    """How one SLA metric of a conversation ended."""

    metric: str = Field(
        description="SLA metric, as configured (e.g. first_response, next_response, resolution).",
        examples=["first_response"],
    )
    target_seconds: int = Field(ge=0, description="Target in seconds that applied.")
    met: bool = Field(description="True when the metric was achieved within the target.")
    breached: bool = Field(
        description="True when the target passed before the metric was achieved. Both are false "
        "when the clock never completed (e.g. closed without an agent reply)."
    )


@event("convohub.feedback.survey_sent.v1", topic=FEEDBACK)
class SurveySent(EventPayload):
    """A satisfaction survey was sent to the customer after a conversation was resolved (or
    again after a follow-up). Emitted by the feedback service."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "survey_id": "svy-3b10",
                    "kinds": ["csat", "nps"],
                    "delivery": "channel_message",
                    "channel_id": "wa-main",
                    "customer_id": "cust-19c2",
                    "expires_at": "2026-11-26T09:00:00Z",
                    "sent_at": "2026-11-23T09:00:00Z",
                    "text": "How satisfied are you with our service? Reply 1 (very "
                    "unsatisfied) to 5 (very satisfied).",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation surveyed, the partition key.")
    survey_id: str = Field(description="Id of the survey.", examples=["svy-3b10"])
    kinds: list[SurveyKind] = Field(min_length=1, description="Questions asked.")
    delivery: SurveyDelivery = Field(description="In the conversation's channel or as a web link.")
    channel_id: str = Field(description="Configured channel the survey was sent on.")
    customer_id: str | None = Field(
        default=None, description="Customer surveyed, when CRM has identified them."
    )
    expires_at: datetime = Field(description="When answers stop being accepted.")
    sent_at: datetime = Field(description="When the survey was sent.")
    follow_up_id: str | None = Field(
        default=None, description="The follow-up this re-survey comes after, if it is one."
    )
    text: str | None = Field(
        default=None,
        description="The question as sent to the customer in the channel; null for a web link.",
    )


@event("convohub.feedback.survey_answered.v1", topic=FEEDBACK)
class SurveyAnswered(EventPayload):
    """The customer answered a survey. Emitted by the feedback service once per survey, from a
    reply in the channel or a web form submission."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "survey_id": "svy-3b10",
                    "csat": 5,
                    "nps": 9,
                    "comment": "客服很耐心 / very patient agent",
                    "raw_answer": "非常满意",
                    "answered_via": "channel_reply",
                    "answered_at": "2026-11-23T09:12:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation surveyed, the partition key.")
    survey_id: str = Field(description="The survey answered.")
    csat: int | None = Field(
        default=None, ge=1, le=5, description="Customer satisfaction, 1 (worst) to 5 (best)."
    )
    nps: int | None = Field(
        default=None, ge=0, le=10, description="Likelihood to recommend, 0 to 10."
    )
    comment: str | None = personal("Free-text comment the customer left.", default=None)
    raw_answer: str | None = personal(
        "What the customer typed, before it was read as a score (e.g. 非常满意 or 5).",
        default=None,
    )
    answered_via: SurveyAnswerMethod = Field(description="Channel reply or web link.")
    answered_at: datetime = Field(description="When the answer was received.")


@event("convohub.feedback.survey_expired.v1", topic=FEEDBACK)
class SurveyExpired(EventPayload):
    """A survey reached its expiry time without an answer. Emitted by the feedback service."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "survey_id": "svy-3b10",
                    "expired_at": "2026-11-26T09:00:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation surveyed, the partition key.")
    survey_id: str = Field(description="The survey that expired.")
    expired_at: datetime = Field(description="When it expired.")


@event("convohub.feedback.analysed.v1", topic=FEEDBACK)
class FeedbackAnalysed(EventPayload):
    """A survey answer or a customer message was analysed for sentiment and topics. Emitted by
    the feedback service for each comment and each inbound customer text."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "source_kind": "customer_message",
                    "source_id": "msg-0001",
                    "sentiment": "negative",
                    "sentiment_score": -0.62,
                    "categories": ["logistics", "service_attitude"],
                    "language": "zh-CN",
                    "analysis_model": "sentiment-zh-en/2026.11",
                }
            ]
        }
    )

    conversation_id: str = Field(
        description="Conversation of the analysed text, the partition key."
    )
    source_kind: FeedbackSourceKind = Field(description="What was analysed.")
    source_id: str = Field(
        description="Survey id for a survey answer, message id for a customer message."
    )
    sentiment: FeedbackSentiment = Field(description="Sentiment on a five-point scale.")
    sentiment_score: float = Field(
        ge=-1, le=1, description="Sentiment from -1 (most negative) to 1 (most positive)."
    )
    categories: list[str] = Field(
        default_factory=list,
        description="Topics found (e.g. product_quality, service_attitude, logistics, billing).",
    )
    language: str = Field(description="BCP 47 language tag of the text.", examples=["zh-CN"])
    analysis_model: str = Field(
        description="Name/version of the model that analysed it.",
        examples=["sentiment-zh-en/2026.11"],
    )


@event("convohub.feedback.follow_up_requested.v1", topic=FEEDBACK)
class FollowUpRequested(EventPayload):
    """Poor feedback asks for a person to contact the customer (closing the loop). Emitted by
    the feedback service on a low CSAT, an NPS detractor or strongly negative sentiment."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "follow_up_id": "fup-61aa",
                    "trigger": "low_csat",
                    "customer_id": "cust-19c2",
                    "trigger_score": 1,
                    "requested_at": "2026-11-23T09:12:01Z",
                    "priority": "P2",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation the feedback was about, the key.")
    follow_up_id: str = Field(description="Id of the follow-up.", examples=["fup-61aa"])
    trigger: FollowUpTrigger = Field(description="What triggered the follow-up.")
    customer_id: str | None = Field(
        default=None, description="Customer to contact, when CRM has identified them."
    )
    trigger_score: float = Field(
        description="The score that crossed the threshold, on the trigger's scale: CSAT 1–5, "
        "NPS 0–10, or sentiment score -1..1."
    )
    requested_at: datetime = Field(description="When the follow-up was requested.")
    priority: Priority = Field(description="How urgently to follow up.")


@event("convohub.feedback.follow_up_closed.v1", topic=FEEDBACK)
class FollowUpClosed(EventPayload):
    """A follow-up was closed with its outcome. Emitted by the feedback service when the agent
    or supervisor handling it closes it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "follow_up_id": "fup-61aa",
                    "outcome": "resolved",
                    "closed_by": "agent-42",
                    "note": "已补发商品并致歉 / reshipped the item and apologised",
                    "closed_at": "2026-11-24T10:30:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation the feedback was about, the key.")
    follow_up_id: str = Field(description="The follow-up closed.")
    outcome: FollowUpOutcome = Field(description="How it ended.")
    closed_by: str = Field(description="Agent or supervisor user id who closed it.")
    note: str | None = personal("Closing note, as typed.", default=None)
    closed_at: datetime = Field(description="When it was closed.")


@event("convohub.feedback.conversation_facts.v1", topic=CONVERSATION_FACTS)
class ConversationFacts(EventPayload):
    """The fact record of one closed conversation, the row BI teams load. Emitted by the
    feedback service after the conversation closes; a later record with the same conversation id
    supersedes an earlier one (e.g. after a reopen or a late survey answer)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "customer_id": "cust-19c2",
                    "started_at": "2026-11-23T09:00:00Z",
                    "first_response_at": "2026-11-23T09:00:45Z",
                    "resolved_at": "2026-11-23T09:10:00Z",
                    "closed_at": "2026-11-23T09:15:00Z",
                    "first_response_seconds": 45.0,
                    "average_response_seconds": 38.5,
                    "handle_seconds": 540.0,
                    "customer_message_count": 6,
                    "agent_message_count": 5,
                    "channel_path": ["web_chat", "whatsapp"],
                    "first_channel": "web_chat",
                    "skill_group": "orders-zh",
                    "priority": "P3",
                    "agent_ids": ["agent-42"],
                    "transfer_count": 0,
                    "reopen_count": 0,
                    "escalated": False,
                    "sla_outcomes": [
                        {
                            "metric": "first_response",
                            "target_seconds": 60,
                            "met": True,
                            "breached": False,
                        },
                        {
                            "metric": "resolution",
                            "target_seconds": 3600,
                            "met": True,
                            "breached": False,
                        },
                    ],
                    "csat": 5,
                    "nps": 9,
                    "sentiment": "positive",
                    "first_contact_resolution": True,
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    customer_id: str | None = Field(default=None, description="Customer, when CRM identified them.")
    started_at: datetime = Field(description="When the conversation started.")
    first_response_at: datetime | None = Field(
        default=None, description="When an agent or bot first replied; empty if never."
    )
    resolved_at: datetime | None = Field(
        default=None, description="When it was last marked resolved; empty if never."
    )
    closed_at: datetime = Field(description="When it was closed.")
    first_response_seconds: float | None = Field(
        default=None, ge=0, description="Seconds from start to the first reply."
    )
    average_response_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Mean seconds from a customer message to the next agent reply.",
    )
    handle_seconds: float | None = Field(
        default=None, ge=0, description="Seconds agents spent assigned to it, summed over agents."
    )
    customer_message_count: int = Field(ge=0, description="Messages from the customer.")
    agent_message_count: int = Field(ge=0, description="Messages from agents and bots.")
    channel_path: list[Channel] = Field(
        min_length=1, description="Channels used, in order of first use (channel switches)."
    )
    first_channel: Channel = Field(description="Channel the conversation started on.")
    skill_group: str | None = Field(
        default=None, description="Skill group it was last routed to, if routed."
    )
    priority: Priority | None = Field(default=None, description="Final priority, if classified.")
    agent_ids: list[str] = Field(
        default_factory=list, description="Agents who were assigned, in order of assignment."
    )
    transfer_count: int = Field(ge=0, description="Transfers between agents or skill groups.")
    reopen_count: int = Field(ge=0, description="Times it was reopened after resolution.")
    escalated: bool = Field(description="True if it was escalated at least once.")
    sla_outcomes: list[SlaOutcomeFact] = Field(
        default_factory=list, description="Outcome of each SLA metric that applied."
    )
    csat: int | None = Field(
        default=None, ge=1, le=5, description="Survey CSAT 1–5, if answered (the latest answer)."
    )
    nps: int | None = Field(
        default=None, ge=0, le=10, description="Survey NPS 0–10, if answered (the latest answer)."
    )
    sentiment: FeedbackSentiment | None = Field(
        default=None, description="Overall customer sentiment of the conversation, if analysed."
    )
    first_contact_resolution: bool | None = Field(
        default=None,
        description="True if resolved without reopen or a repeat contact in the tenant's "
        "window; empty while not yet known.",
    )
