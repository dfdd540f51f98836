"""Which conversation an inbound contact belongs to: a pure decision over the state of the
customer's latest conversation."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from convohub.contracts.events.common import Channel

__all__ = [
    "ConversationState",
    "ConversationStatus",
    "Placement",
    "is_human_request",
    "place_contact",
]


class ConversationStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    CLOSED = "closed"


@dataclass(frozen=True)
class ConversationState:
    conversation_id: str
    channel: Channel
    channel_id: str
    status: ConversationStatus
    survey_pending: bool = False


@dataclass(frozen=True)
class Placement:
    """Where a contact goes, and which lifecycle facts it causes before the message itself."""

    conversation_id: str
    started: bool = False
    switched_from: tuple[Channel, str] | None = None
    reopened: bool = False


def place_contact(
    current: ConversationState | None, channel_id: str, new_conversation_id: str
) -> Placement:
    """Place a customer's contact on `channel_id`, given their latest conversation.

    No conversation, or a closed one: a new conversation starts. An open or resolved one
    continues (on another channel: a channel switch). A resolved one is reopened by the
    customer's message, unless a survey awaits the customer's answer there: then the
    message is that answer's carrier and the conversation stays resolved.
    """
    if current is None or current.status is ConversationStatus.CLOSED:
        return Placement(conversation_id=new_conversation_id, started=True)
    switched = (current.channel, current.channel_id) if current.channel_id != channel_id else None
    reopened = current.status is ConversationStatus.RESOLVED and not current.survey_pending
    return Placement(
        conversation_id=current.conversation_id, switched_from=switched, reopened=reopened
    )


DEFAULT_HUMAN_KEYWORDS = ("agent", "human", "人工", "转人工", "operator", "representative")


def is_human_request(text: str | None, keywords: tuple[str, ...] = DEFAULT_HUMAN_KEYWORDS) -> bool:
    """Whether a short customer text asks for a human ("agent", "转人工 please")."""
    if not text:
        return False
    lowered = text.strip().lower()
    if len(lowered) > 60:  # a long message mentioning "agent" is not a request to switch
        return False
    return any(keyword.lower() in lowered for keyword in keywords)
