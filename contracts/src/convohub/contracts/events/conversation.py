"""Conversation events: what customers, agents, bots and the system did in a conversation.

Carried on `convohub.conversation.v1`, keyed by conversation id. Ingest produces them from
channel webhooks and agent commands.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, Field, field_validator, model_validator

from convohub.contracts.events.common import (
    Channel,
    ChannelIdentity,
    MessageContent,
    Participant,
    ParticipantKind,
    Priority,
)
from convohub.contracts.events.routing import TransferReason
from convohub.contracts.payload import EventPayload, ValueObject, event, personal
from convohub.contracts.topics import CONVERSATION


class DeliveryState(StrEnum):
    """How far the provider got delivering an outbound message; states only move forward."""

    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"


class HumanRequestTrigger(StrEnum):
    """How the customer asked for a human agent."""

    TYPED_TEXT = "typed_text"
    BUTTON = "button"
    IVR = "ivr"


class ConversationReopenReason(StrEnum):
    """Why a resolved conversation was reopened."""

    CUSTOMER_MESSAGE = "customer_message"
    AGENT_ACTION = "agent_action"
    SYSTEM = "system"


class ConversationCloseReason(StrEnum):
    """Why a conversation was closed for good."""

    RESOLVED = "resolved"
    ABANDONED = "abandoned"
    SPAM = "spam"
    MERGED = "merged"
    EXPIRED = "expired"


class CallDirection(StrEnum):
    """Who placed a voice call."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallEndStatus(StrEnum):
    """How a voice call ended, as the voice provider reports it."""

    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    CANCELED = "canceled"


class CallRecording(ValueObject):
    """A recording of a voice call; the audio itself stays with the voice provider."""

    provider_recording_id: str = Field(
        description="The provider's id of the recording (Twilio RecordingSid).",
        examples=["RE5f8e2c1a9b7d4e3f2a1b0c9d8e7f6a5b"],
    )
    url: str = personal(
        "Where the provider serves the audio; the recording is the customer's voice.",
        examples=["https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE5f8e"],
    )
    duration_seconds: int = Field(ge=0, description="Length of the recording in whole seconds.")


@event("convohub.conversation.started.v1", topic=CONVERSATION)
class ConversationStarted(EventPayload):
    """A customer opened a new conversation on a channel (first inbound contact).

    Ingest emits it when a webhook or call reaches it that belongs to no open conversation.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "channel": "whatsapp",
                    "channel_id": "wa-main",
                    "customer": {
                        "channel": "whatsapp",
                        "channel_id": "wa-main",
                        "address": "8613800138000",
                        "display_name": "Zhang San",
                    },
                    "started_at": "2026-11-23T09:00:00Z",
                    "routing_hints": {"ivr_choice": "2"},
                }
            ]
        }
    )

    conversation_id: str = Field(
        description="Conversation id, the partition key.", examples=["conv-7f3a"]
    )
    channel: Channel = Field(description="Channel kind the conversation started on.")
    channel_id: str = Field(description="Configured channel the conversation started on.")
    customer: ChannelIdentity = Field(description="The customer's identity on that channel.")
    started_at: datetime = Field(description="When the provider received the first message.")
    routing_hints: dict[str, str] = Field(
        default_factory=dict,
        description="Channel-specific hints for the router (IVR choice, web page, campaign).",
    )


@event("convohub.conversation.message_received.v1", topic=CONVERSATION)
class MessageReceived(EventPayload):
    """The customer sent a message into the conversation.

    Ingest emits it for every inbound message a channel webhook delivers, once per provider id.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "message_id": "msg-0001",
                    "channel": "whatsapp",
                    "channel_id": "wa-main",
                    "provider_message_id": "wamid.HBgLMTIzNDU2Nzg5MA==",
                    "customer": {
                        "channel": "whatsapp",
                        "channel_id": "wa-main",
                        "address": "8613800138000",
                    },
                    "content": {"text": "我的订单还没有发货"},
                    "received_at": "2026-11-23T09:00:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    message_id: str = Field(description="ConvoHub's id of the message.")
    channel: Channel = Field(description="Channel kind the message arrived on.")
    channel_id: str = Field(description="Configured channel the message arrived on.")
    provider_message_id: str = Field(
        description="The provider's own id (Twilio MessageSid, WhatsApp wamid, Message-ID); "
        "ingest de-duplicates provider retries on (channel_id, provider_message_id)."
    )
    customer: ChannelIdentity = Field(description="Sender identity on the channel.")
    content: MessageContent = Field(description="What the message says.")
    received_at: datetime = Field(description="When the provider received the message.")
    in_reply_to: str | None = Field(
        default=None, description="Provider id of the message this one answers (e-mail threading)."
    )


@event("convohub.conversation.message_sent.v1", topic=CONVERSATION)
class MessageSent(EventPayload):
    """An agent, a bot or the system sent a message to the customer, to be delivered on a channel.

    Ingest emits it when it accepts the message from the agent API or a bot; its outbound
    delivery consumes it and reports back with MessageDelivered or MessageFailed.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "message_id": "msg-0002",
                    "channel": "whatsapp",
                    "channel_id": "wa-main",
                    "author": {"kind": "agent", "id": "agent-42", "display_name": "Li Wei"},
                    "recipient": {
                        "channel": "whatsapp",
                        "channel_id": "wa-main",
                        "address": "8613800138000",
                        "display_name": "Zhang San",
                    },
                    "content": {
                        "text": "您好，您的订单已发货，运单号 SF1234567890 / "
                        "your order has shipped, tracking SF1234567890."
                    },
                    "sent_at": "2026-11-23T09:03:12Z",
                    "in_reply_to_message_id": "msg-0001",
                    "template": "order_shipped_zh_cn",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    message_id: str = Field(description="ConvoHub's id of the message.")
    channel: Channel = Field(description="Channel kind the message is to be delivered on.")
    channel_id: str = Field(description="Configured channel the message is to be delivered on.")
    author: Participant = Field(
        description="Who wrote the message: an agent, a bot or the system, never the customer."
    )
    recipient: ChannelIdentity = Field(
        description="The customer's address the message is delivered to."
    )
    content: MessageContent = Field(
        description="What the message says (for a template, the text as rendered)."
    )
    sent_at: datetime = Field(
        description="When ConvoHub accepted the message for delivery (before the provider has it)."
    )
    in_reply_to_message_id: str | None = Field(
        default=None, description="ConvoHub id of the customer message this one answers, if any."
    )
    template: str | None = Field(
        default=None,
        description="Name of the pre-approved template used (WhatsApp templates), if any.",
    )

    @field_validator("author")
    @classmethod
    def _author_is_not_the_customer(cls, author: Participant) -> Participant:
        if author.kind == ParticipantKind.CUSTOMER:
            raise ValueError("an outbound message is authored by an agent, a bot or the system")
        return author


@event("convohub.conversation.message_delivered.v1", topic=CONVERSATION)
class MessageDelivered(EventPayload):
    """The provider confirmed that an outbound message reached a delivery state (sent,
    delivered, read).

    Ingest emits it once per state from the provider's status callbacks.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "message_id": "msg-0002",
                    "channel": "whatsapp",
                    "channel_id": "wa-main",
                    "provider_message_id": "wamid.HBgLMTIzNDU2Nzg5MB==",
                    "state": "read",
                    "state_changed_at": "2026-11-23T09:05:40Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    message_id: str = Field(description="ConvoHub's id of the outbound message (see MessageSent).")
    channel: Channel = Field(description="Channel kind the message was delivered on.")
    channel_id: str = Field(description="Configured channel the message was delivered on.")
    provider_message_id: str = Field(
        description="The provider's id of the message (Twilio MessageSid, WhatsApp wamid)."
    )
    state: DeliveryState = Field(description="The delivery state the provider confirmed.")
    state_changed_at: datetime = Field(
        description="When the provider says the message reached this state."
    )


@event("convohub.conversation.message_failed.v1", topic=CONVERSATION)
class MessageFailed(EventPayload):
    """Delivering an outbound message failed.

    Ingest's outbound delivery emits it after each failed attempt; `retryable` says whether
    it will try again.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "message_id": "msg-0002",
                    "channel": "whatsapp",
                    "channel_id": "wa-main",
                    "provider_message_id": "wamid.HBgLMTIzNDU2Nzg5MB==",
                    "error_code": "131047",
                    "error_message": "Re-engagement message: more than 24 hours have passed "
                    "since the recipient last replied.",
                    "retryable": False,
                    "attempts": 1,
                    "failed_at": "2026-11-23T09:03:14Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    message_id: str = Field(description="ConvoHub's id of the outbound message (see MessageSent).")
    channel: Channel = Field(description="Channel kind the delivery was attempted on.")
    channel_id: str = Field(description="Configured channel the delivery was attempted on.")
    provider_message_id: str | None = Field(
        default=None,
        description="The provider's id of the message, if the provider accepted it before failing.",
    )
    error_code: str = Field(
        description="The provider's error code (Twilio 30007, WhatsApp 131047, SMTP 550)."
    )
    error_message: str = personal(
        "The provider's error text; marked personal because providers may quote the recipient's "
        "address in it (Twilio 21211 names the 'To' number)."
    )
    retryable: bool = Field(
        description="True if the error is transient and ingest will retry; "
        "False if the message is given up."
    )
    attempts: int = Field(ge=1, description="Delivery attempts made so far, this one included.")
    failed_at: datetime = Field(description="When this attempt failed.")


@event("convohub.conversation.channel_switched.v1", topic=CONVERSATION)
class ChannelSwitched(EventPayload):
    """The same customer continued the conversation on another channel (cross-channel
    continuity), for example from web chat to WhatsApp.

    Ingest emits it when an inbound contact on a new channel is attached to the open
    conversation; replies then go to the new channel.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "from_channel": "web_chat",
                    "from_channel_id": "web-main",
                    "to_channel": "whatsapp",
                    "to_channel_id": "wa-main",
                    "customer": {
                        "channel": "whatsapp",
                        "channel_id": "wa-main",
                        "address": "8613800138000",
                        "display_name": "Zhang San",
                    },
                    "first_message_id": "msg-0005",
                    "switched_at": "2026-11-23T10:15:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    from_channel: Channel = Field(description="Channel kind the conversation was on.")
    from_channel_id: str = Field(description="Configured channel the conversation was on.")
    to_channel: Channel = Field(description="Channel kind the conversation continues on.")
    to_channel_id: str = Field(description="Configured channel the conversation continues on.")
    customer: ChannelIdentity = Field(
        description="The customer's identity on the new channel; replies go to it from now on."
    )
    first_message_id: str | None = Field(
        default=None,
        description="ConvoHub id of the first customer message on the new channel, if any.",
    )
    switched_at: datetime = Field(description="When the customer appeared on the new channel.")


@event("convohub.conversation.human_requested.v1", topic=CONVERSATION)
class HumanRequested(EventPayload):
    """The customer asked to talk to a human agent (typed "转人工" or "agent", pressed a
    button, or chose it in the IVR).

    Ingest emits it when it recognises the request; the router hands the conversation over.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "channel": "whatsapp",
                    "channel_id": "wa-main",
                    "trigger": "typed_text",
                    "trigger_text": "转人工 please, 机器人没用",
                    "message_id": "msg-0003",
                    "requested_at": "2026-11-23T09:01:30Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    channel: Channel = Field(description="Channel kind the request came in on.")
    channel_id: str = Field(description="Configured channel the request came in on.")
    trigger: HumanRequestTrigger = Field(description="How the customer asked.")
    trigger_text: str | None = personal(
        "What the customer typed, or the label of the button they pressed.", default=None
    )
    message_id: str | None = Field(
        default=None, description="ConvoHub id of the customer message that carried the request."
    )
    requested_at: datetime = Field(description="When the customer asked.")


@event("convohub.conversation.priority_changed.v1", topic=CONVERSATION)
class PriorityChanged(EventPayload):
    """The conversation's priority was changed by an agent, a bot or the system.

    Ingest emits it from agent commands and automation rules.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "from_priority": "P3",
                    "to_priority": "P1",
                    "changed_by": {"kind": "agent", "id": "agent-42", "display_name": "Li Wei"},
                    "reason_code": "complaint_escalation",
                    "reason_note": "客户第三次来询问 / third contact about the same order",
                    "changed_at": "2026-11-23T09:10:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    from_priority: Priority = Field(description="Priority before the change.")
    to_priority: Priority = Field(description="Priority after the change.")
    changed_by: Participant = Field(description="Who changed the priority.")
    reason_code: str = Field(
        description="Machine-readable reason (vip_customer, complaint_escalation, sla_risk).",
        examples=["complaint_escalation"],
    )
    reason_note: str | None = personal("Free-text note the changer typed, if any.", default=None)
    changed_at: datetime = Field(description="When the priority changed.")


@event("convohub.conversation.tags_changed.v1", topic=CONVERSATION)
class TagsChanged(EventPayload):
    """Tags were added to or removed from the conversation.

    Ingest emits it from agent commands, bot classification and automation rules.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "tags_added": ["shipping_delay", "vip"],
                    "tags_removed": ["new"],
                    "changed_by": {"kind": "agent", "id": "agent-42", "display_name": "Li Wei"},
                    "changed_at": "2026-11-23T09:04:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    tags_added: list[str] = Field(default_factory=list, description="Tags added by this change.")
    tags_removed: list[str] = Field(
        default_factory=list, description="Tags removed by this change."
    )
    changed_by: Participant = Field(description="Who changed the tags.")
    changed_at: datetime = Field(description="When the tags changed.")


@event("convohub.conversation.note_added.v1", topic=CONVERSATION)
class NoteAdded(EventPayload):
    """An agent (or a bot) added an internal note to the conversation; it is never shown to
    the customer.

    Ingest emits it from the agent API.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "note_id": "note-0001",
                    "author": {"kind": "agent", "id": "agent-42", "display_name": "Li Wei"},
                    "text": "客户要求改地址，已联系仓库 / asked warehouse to change the address",
                    "added_at": "2026-11-23T09:06:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    note_id: str = Field(description="ConvoHub's id of the note.")
    author: Participant = Field(description="Who wrote the note.")
    text: str = personal("The note's text.")
    added_at: datetime = Field(description="When the note was added.")


@event("convohub.conversation.resolved.v1", topic=CONVERSATION)
class ConversationResolved(EventPayload):
    """An agent, a bot or the system marked the conversation resolved; it stays reopenable
    until it is closed.

    Ingest emits it from agent commands and bot or automation decisions.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "resolved_by": {"kind": "agent", "id": "agent-42", "display_name": "Li Wei"},
                    "resolution_code": "order_shipped",
                    "resolved_at": "2026-11-23T09:20:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    resolved_by: Participant = Field(description="Who marked the conversation resolved.")
    resolution_code: str | None = Field(
        default=None,
        description="Machine-readable outcome (order_shipped, refund_issued), if given.",
    )
    resolved_at: datetime = Field(description="When the conversation was marked resolved.")


@event("convohub.conversation.reopened.v1", topic=CONVERSATION)
class ConversationReopened(EventPayload):
    """A resolved conversation was reopened, by a new customer message or by an agent.

    Ingest emits it when a customer writes into a resolved conversation before it closes, or
    on an agent's command.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "reopened_by": {"kind": "customer"},
                    "reason": "customer_message",
                    "message_id": "msg-0009",
                    "reopened_at": "2026-11-23T14:02:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    reopened_by: Participant = Field(description="Who reopened the conversation.")
    reason: ConversationReopenReason = Field(description="Why the conversation was reopened.")
    message_id: str | None = Field(
        default=None,
        description="ConvoHub id of the customer message that reopened it, for customer_message.",
    )
    reason_note: str | None = personal(
        "Free-text note an agent typed when reopening, if any.", default=None
    )
    reopened_at: datetime = Field(description="When the conversation was reopened.")


@event("convohub.conversation.closed.v1", topic=CONVERSATION)
class ConversationClosed(EventPayload):
    """The conversation was closed for good: after resolution and its grace period, or by an
    agent or the system. Nothing reopens it; the customer's next contact starts a new one.

    Ingest emits it; feedback builds the conversation's fact record from it.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "reason": "resolved",
                    "closed_by": {"kind": "system"},
                    "closed_at": "2026-11-24T09:20:00Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    reason: ConversationCloseReason = Field(description="Why the conversation was closed.")
    closed_by: Participant = Field(
        description="Who closed it (the system when the grace period ran out)."
    )
    merged_into_conversation_id: str | None = Field(
        default=None, description="The conversation this one was merged into, for reason merged."
    )
    closed_at: datetime = Field(description="When the conversation was closed.")


@event("convohub.conversation.call_started.v1", topic=CONVERSATION)
class CallStarted(EventPayload):
    """A voice call started, inbound from the customer or outbound to them.

    Ingest emits it from the voice provider's call webhook, after the IVR if there is one.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-9b21",
                    "channel_id": "voice-cn",
                    "provider_call_id": "CA1b2c3d4e5f60718293a4b5c6d7e8f901",
                    "customer": {
                        "channel": "voice",
                        "channel_id": "voice-cn",
                        "address": "+8613800138000",
                    },
                    "company_number": "+862161234567",
                    "direction": "inbound",
                    "started_at": "2026-11-23T09:30:00Z",
                    "ivr_choice": "2",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    channel_id: str = Field(description="Configured voice channel the call is on.")
    provider_call_id: str = Field(
        description="The voice provider's id of the call (Twilio CallSid); the call events "
        "of one call share it."
    )
    customer: ChannelIdentity = Field(
        description="The customer's phone: the caller for inbound, the callee for outbound."
    )
    company_number: str = Field(
        description="The company's own E.164 number on the call (not personal data).",
        examples=["+862161234567"],
    )
    direction: CallDirection = Field(description="Inbound from or outbound to the customer.")
    started_at: datetime = Field(description="When the provider started the call.")
    ivr_choice: str | None = Field(
        default=None,
        description="Digits the caller pressed in the IVR menu, a routing hint, if any.",
    )


@event("convohub.conversation.call_answered.v1", topic=CONVERSATION)
class CallAnswered(EventPayload):
    """A voice call was answered: by an agent for inbound calls, by the customer for outbound.

    Ingest emits it from the voice provider's call status webhook.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-9b21",
                    "channel_id": "voice-cn",
                    "provider_call_id": "CA1b2c3d4e5f60718293a4b5c6d7e8f901",
                    "agent_id": "agent-42",
                    "answered_at": "2026-11-23T09:30:48Z",
                    "wait_seconds": 48.0,
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    channel_id: str = Field(description="Configured voice channel the call is on.")
    provider_call_id: str = Field(description="The voice provider's id of the call.")
    agent_id: str | None = Field(
        default=None, description="The agent on the call, if an agent answered or placed it."
    )
    answered_at: datetime = Field(description="When the call was answered.")
    wait_seconds: float = Field(
        ge=0, description="Seconds from the call's start (after the IVR) until it was answered."
    )


@event("convohub.conversation.call_ended.v1", topic=CONVERSATION)
class CallEnded(EventPayload):
    """A voice call ended, answered or not.

    Ingest emits it from the voice provider's final call status webhook.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-9b21",
                    "channel_id": "voice-cn",
                    "provider_call_id": "CA1b2c3d4e5f60718293a4b5c6d7e8f901",
                    "ended_at": "2026-11-23T09:37:10Z",
                    "duration_seconds": 430,
                    "end_status": "completed",
                    "ivr_choice": "2",
                    "recording": {
                        "provider_recording_id": "RE5f8e2c1a9b7d4e3f2a1b0c9d8e7f6a5b",
                        "url": "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE5f8e",
                        "duration_seconds": 382,
                    },
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    channel_id: str = Field(description="Configured voice channel the call was on.")
    provider_call_id: str = Field(description="The voice provider's id of the call.")
    ended_at: datetime = Field(description="When the call ended.")
    duration_seconds: int = Field(
        ge=0, description="Whole seconds from the call's start to its end, as the provider reports."
    )
    end_status: CallEndStatus = Field(description="How the call ended.")
    ivr_choice: str | None = Field(
        default=None, description="Digits the caller pressed in the IVR menu, if any."
    )
    recording: CallRecording | None = Field(
        default=None, description="The call's recording, if it was recorded."
    )


@event("convohub.conversation.transfer_requested.v1", topic=CONVERSATION)
class TransferRequested(EventPayload):
    """An agent or supervisor asked for the conversation to move to another agent or queue.

    Not emitted by this release: a transfer is a synchronous router command
    (`POST /v1/conversations/{id}/transfer`, which checks the target's capacity) reported as
    `convohub.routing.transferred.v1`. The type stays in v1 because events are never removed
    within a version. Exactly one of `to_agent_id` and `to_skill_group` is set.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "conv-7f3a",
                    "request_id": "xfer-0001",
                    "from_agent_id": "agent-42",
                    "to_skill_group": "shipping",
                    "requested_by": {"kind": "agent", "id": "agent-42", "display_name": "Li Wei"},
                    "reason": "wrong_skill_group",
                    "note": "客户问的是物流延误, not a refund. Order #A1029.",
                    "carried_note_ids": ["note-0003"],
                    "requested_at": "2026-11-23T09:12:30Z",
                }
            ]
        }
    )

    conversation_id: str = Field(description="Conversation id, the partition key.")
    request_id: str = Field(description="ConvoHub's id of this transfer request.")
    from_agent_id: str | None = Field(
        default=None, description="Agent who owned the conversation when asked, if assigned."
    )
    to_agent_id: str | None = Field(
        default=None, description="Agent to transfer to; empty when the target is a queue."
    )
    to_skill_group: str | None = Field(
        default=None, description="Skill group (queue) to transfer to; empty for an agent."
    )
    requested_by: Participant = Field(description="The agent or supervisor who asked.")
    reason: TransferReason = Field(description="Reason code for the transfer.")
    note: str | None = personal("Free-text handover note for the new owner, if any.", default=None)
    carried_note_ids: list[str] = Field(
        default_factory=list,
        description="Ids of the conversation's internal notes to hand over to the new owner.",
    )
    requested_at: datetime = Field(description="When the transfer was requested.")

    @model_validator(mode="after")
    def _exactly_one_destination(self) -> TransferRequested:
        if (self.to_agent_id is None) == (self.to_skill_group is None):
            raise ValueError("exactly one of to_agent_id and to_skill_group must be set")
        return self
