"""What a channel adapter hands the ingest pipeline, whatever the provider: a customer
message, a delivery status of an outbound message, or a voice call's progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from convohub.contracts.events.common import Channel, ChannelIdentity, MessageContent
from convohub.contracts.events.conversation import CallEndStatus, CallRecording


@dataclass(frozen=True)
class Customer:
    """The sender as the channel names them, and the key that recognises them elsewhere."""

    channel: Channel
    channel_id: str
    address: str
    key: str
    display_name: str | None = None

    def identity(self) -> ChannelIdentity:
        return ChannelIdentity(
            channel=self.channel,
            channel_id=self.channel_id,
            address=self.address,
            display_name=self.display_name,
        )


@dataclass(frozen=True)
class InboundMessage:
    """One customer message, as any provider delivers it."""

    provider_message_id: str
    customer: Customer
    content: MessageContent
    received_at: datetime
    thread_refs: tuple[str, ...] = ()
    """Provider ids of earlier messages of the thread (e-mail In-Reply-To, References)."""
    in_reply_to: str | None = None
    routing_hints: dict[str, str] = field(default_factory=dict)


class StatusKind(StrEnum):
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


@dataclass(frozen=True)
class InboundStatus:
    """A provider's delivery status of an outbound message."""

    provider_message_id: str
    state: StatusKind
    at: datetime
    error_code: str | None = None
    error_message: str | None = None


class CallPhase(StrEnum):
    STARTED = "started"
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass(frozen=True)
class InboundCall:
    """One voice status callback."""

    call_id: str
    customer: Customer
    company_number: str
    inbound: bool
    phase: CallPhase
    at: datetime
    ivr_choice: str | None = None
    duration_seconds: int | None = None
    end_status: CallEndStatus | None = None
    recording: CallRecording | None = None


class PayloadError(ValueError):
    """A provider payload this adapter cannot read; `field` names the offending field."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail
