"""Value types shared by several event areas."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from convohub.contracts.payload import ValueObject, personal


class Channel(StrEnum):
    """The kind of channel a customer reached the company through."""

    WEB_CHAT = "web_chat"
    EMAIL = "email"
    SMS = "sms"
    WHATSAPP = "whatsapp"
    SOCIAL = "social"
    VOICE = "voice"
    API = "api"


class Priority(StrEnum):
    """Conversation priority, P1 the most urgent."""

    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"


class AgentTier(StrEnum):
    """Seniority of an agent; escalations go to the senior tier."""

    JUNIOR = "junior"
    MID = "mid"
    SENIOR = "senior"


class ParticipantKind(StrEnum):
    """Who authored a message or performed an action."""

    CUSTOMER = "customer"
    AGENT = "agent"
    BOT = "bot"
    SYSTEM = "system"


class Participant(ValueObject):
    """The author of a message or action."""

    kind: ParticipantKind = Field(description="Customer, agent, bot or system.")
    id: str | None = Field(
        default=None,
        description="Agent id or bot name; empty for the customer and the system.",
        examples=["agent-42"],
    )
    display_name: str | None = personal(
        "Name shown to the other side (an agent's name can be personal data too).",
        default=None,
        examples=["Li Wei"],
    )


class ChannelIdentity(ValueObject):
    """How a customer is addressed on one channel: the handle a reply is sent to."""

    channel: Channel = Field(description="Channel kind this address belongs to.")
    channel_id: str = Field(
        description="The configured channel (from convohub.yaml) the address was seen on.",
        examples=["sms-main"],
    )
    address: str = personal(
        "The customer's address on the channel: E.164 phone, e-mail address, WhatsApp id, "
        "social handle, web visitor id or the integrator's own id.",
        examples=["+8613800138000"],
    )
    display_name: str | None = personal(
        "Name the provider reports for the customer, if any.", default=None, examples=["Zhang San"]
    )


class Attachment(ValueObject):
    """A file or media item sent with a message; the content itself stays with the provider."""

    url: str = personal(
        "Where the provider serves the content (may embed personal data).",
        examples=["https://media.example.com/abc.jpg"],
    )
    content_type: str = Field(description="MIME type.", examples=["image/jpeg"])
    filename: str | None = personal("Original file name, if known.", default=None)
    size_bytes: int | None = Field(default=None, ge=0, description="Size in bytes, if known.")


class Location(ValueObject):
    """A location shared by the customer."""

    latitude: float = personal("Latitude in degrees (WGS 84).", ge=-90, le=90, examples=[31.2304])
    longitude: float = personal(
        "Longitude in degrees (WGS 84).", ge=-180, le=180, examples=[121.4737]
    )
    label: str | None = personal("Name or address of the place, if given.", default=None)


class MessageContent(ValueObject):
    """What a message says: text, attachments, a location or an interactive reply."""

    text: str | None = personal(
        "Plain text of the message (HTML converted, quotes and signatures stripped for e-mail).",
        default=None,
        examples=["我的订单还没有发货 / my order has not shipped yet"],
    )
    subject: str | None = personal("E-mail subject line, if any.", default=None)
    attachments: list[Attachment] = Field(
        default_factory=list, description="Attached files and media."
    )
    location: Location | None = Field(default=None, description="A shared location, if any.")
    interactive_reply_id: str | None = Field(
        default=None,
        description="Id of the button or list item the customer picked, for interactive messages.",
    )
