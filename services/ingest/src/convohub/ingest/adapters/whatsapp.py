"""The WhatsApp Cloud API (Meta) webhook format: `entry[].changes[].value` holding
`messages` (text, media, location, interactive replies) and `statuses`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from convohub.contracts.events.common import Attachment, Channel, Location, MessageContent
from convohub.ingest.domain.identifiers import InvalidIdentifierError, phone_key, whatsapp_phone
from convohub.ingest.domain.inbound import (
    Customer,
    InboundMessage,
    InboundStatus,
    PayloadError,
    StatusKind,
)

__all__ = ["WhatsAppBatch", "parse_notification"]

GRAPH_MEDIA_URL = "https://graph.facebook.com/v21.0/"
_MEDIA_TYPES = ("image", "audio", "video", "document", "sticker", "voice")
_STATUS = {
    "sent": StatusKind.SENT,
    "delivered": StatusKind.DELIVERED,
    "read": StatusKind.READ,
    "failed": StatusKind.FAILED,
}


@dataclass(frozen=True)
class WhatsAppBatch:
    messages: list[InboundMessage]
    statuses: list[InboundStatus]


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(field, "must be an object")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(field, "must be an array")
    return value


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise PayloadError(field, "must be a non-empty string")
    return str(value)


def _time(value: Any, field: str) -> datetime:
    try:
        return datetime.fromtimestamp(int(_text(value, field)), UTC)
    except (ValueError, OverflowError, OSError):
        raise PayloadError(field, "must be a Unix timestamp") from None


def parse_notification(document: Any, *, channel_id: str) -> WhatsAppBatch:
    root = _object(document, "body")
    messages: list[InboundMessage] = []
    statuses: list[InboundStatus] = []
    for entry_index, entry in enumerate(_list(root.get("entry"), "entry")):
        entry_path = f"entry[{entry_index}]"
        changes = _list(_object(entry, entry_path).get("changes"), f"{entry_path}.changes")
        for change_index, change in enumerate(changes):
            path = f"{entry_path}.changes[{change_index}].value"
            value = _object(_object(change, path).get("value"), path)
            names = {}
            for contact in _list(value.get("contacts"), f"{path}.contacts"):
                if isinstance(contact, dict) and isinstance(contact.get("profile"), dict):
                    names[str(contact.get("wa_id"))] = contact["profile"].get("name")
            for index, message in enumerate(_list(value.get("messages"), f"{path}.messages")):
                messages.append(
                    _message(
                        _object(message, f"{path}.messages[{index}]"),
                        f"{path}.messages[{index}]",
                        names,
                        channel_id,
                    )
                )
            for index, status in enumerate(_list(value.get("statuses"), f"{path}.statuses")):
                parsed = _status(
                    _object(status, f"{path}.statuses[{index}]"), f"{path}.statuses[{index}]"
                )
                if parsed is not None:
                    statuses.append(parsed)
    return WhatsAppBatch(messages=messages, statuses=statuses)


def _message(
    message: dict[str, Any], path: str, names: dict[str, Any], channel_id: str
) -> InboundMessage:
    wa_id = _text(message.get("from"), f"{path}.from")
    try:
        phone = whatsapp_phone(wa_id)
    except InvalidIdentifierError as error:
        raise PayloadError(f"{path}.from", str(error)) from None
    kind = _text(message.get("type"), f"{path}.type")
    text = None
    attachments: list[Attachment] = []
    location = None
    reply_id = None
    if kind == "text":
        text = _text(_object(message.get("text"), f"{path}.text").get("body"), f"{path}.text.body")
    elif kind in _MEDIA_TYPES:
        media = _object(message.get(kind), f"{path}.{kind}")
        media_id = _text(media.get("id"), f"{path}.{kind}.id")
        attachments.append(
            Attachment(
                url=GRAPH_MEDIA_URL + media_id,
                content_type=str(media.get("mime_type") or "application/octet-stream"),
                filename=media.get("filename") if isinstance(media.get("filename"), str) else None,
            )
        )
        caption = media.get("caption")
        text = caption if isinstance(caption, str) and caption else None
    elif kind == "location":
        place = _object(message.get("location"), f"{path}.location")
        try:
            location = Location(
                latitude=float(place.get("latitude")),  # type: ignore[arg-type]
                longitude=float(place.get("longitude")),  # type: ignore[arg-type]
                label=", ".join(str(place[key]) for key in ("name", "address") if place.get(key))
                or None,
            )
        except (TypeError, ValueError):
            raise PayloadError(f"{path}.location", "needs latitude and longitude") from None
    elif kind == "interactive":
        interactive = _object(message.get("interactive"), f"{path}.interactive")
        reply_kind = _text(interactive.get("type"), f"{path}.interactive.type")
        reply = _object(interactive.get(reply_kind), f"{path}.interactive.{reply_kind}")
        reply_id = _text(reply.get("id"), f"{path}.interactive.{reply_kind}.id")
        text = reply.get("title") if isinstance(reply.get("title"), str) else None
    elif kind == "button":
        button = _object(message.get("button"), f"{path}.button")
        reply_id = _text(button.get("payload"), f"{path}.button.payload")
        text = button.get("text") if isinstance(button.get("text"), str) else None
    else:
        raise PayloadError(f"{path}.type", f"message type {kind!r} is not supported")
    context = message.get("context") if isinstance(message.get("context"), dict) else {}
    display_name = names.get(wa_id)
    return InboundMessage(
        provider_message_id=_text(message.get("id"), f"{path}.id"),
        customer=Customer(
            channel=Channel.WHATSAPP,
            channel_id=channel_id,
            address=wa_id,
            key=phone_key(phone),
            display_name=display_name if isinstance(display_name, str) else None,
        ),
        content=MessageContent(
            text=text, attachments=attachments, location=location, interactive_reply_id=reply_id
        ),
        received_at=_time(message.get("timestamp"), f"{path}.timestamp"),
        in_reply_to=context.get("id") if isinstance(context.get("id"), str) else None,
    )


def _status(status: dict[str, Any], path: str) -> InboundStatus | None:
    state = _STATUS.get(_text(status.get("status"), f"{path}.status"))
    if state is None:
        return None
    code = message = None
    errors = status.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code = str(errors[0].get("code", "")) or None
        message = errors[0].get("title") or errors[0].get("message")
        message = str(message) if message else None
    return InboundStatus(
        provider_message_id=_text(status.get("id"), f"{path}.id"),
        state=state,
        at=_time(status.get("timestamp"), f"{path}.timestamp"),
        error_code=code,
        error_message=message,
    )
