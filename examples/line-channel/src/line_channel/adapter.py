"""LINE Messaging API webhooks in, push messages out.

- In: `POST` with a JSON body `{"destination", "events": [...]}`, signed in the
  `X-Line-Signature` header: base64 of HMAC-SHA256 of the raw body with the channel secret.
  Message events (text, image, video, audio, file, location, sticker) become customer
  messages; their `message.id` is the provider message id ConvoHub dedupes on. Other events
  (follow, unfollow, postback...) and the console's empty verification request are
  acknowledged and ignored.
- Out: `POST {api_base_url}/v2/bot/message/push` with the channel access token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from convohub.ingest.sdk import (
    AdapterChannel,
    Attachment,
    Channel,
    ChannelAdapter,
    Customer,
    DeliveryOutcome,
    Inbound,
    InboundMessage,
    Location,
    MessageContent,
    OutboundMessage,
    PayloadError,
    SignatureInvalid,
    SignatureMissing,
    WebhookRequest,
    external_key,
)

__all__ = ["LINE_API", "LineAdapter", "line_signature"]

LINE_API = "https://api.line.me"
SIGNATURE_HEADER = "X-Line-Signature"
_MEDIA = {"image": "image/jpeg", "video": "video/mp4", "audio": "audio/m4a", "file": None}


def line_signature(channel_secret: str, body: bytes) -> str:
    """The `X-Line-Signature` LINE sends with `body`."""
    digest = hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class LineAdapter(ChannelAdapter):
    name = "line"
    summary = "LINE Messaging API webhook (X-Line-Signature)"
    channel_types = (Channel.SOCIAL,)
    required_secrets = ("channel_secret",)

    def verify(self, request: WebhookRequest, channel: AdapterChannel) -> None:
        presented = request.header(SIGNATURE_HEADER)
        if not presented:
            raise SignatureMissing(f"the {SIGNATURE_HEADER} header is required")
        expected = line_signature(channel.secret("channel_secret"), request.body)
        if not hmac.compare_digest(expected.encode(), presented.strip().encode()):
            raise SignatureInvalid(f"{SIGNATURE_HEADER} does not match")

    def parse(self, request: WebhookRequest, channel: AdapterChannel) -> Sequence[Inbound]:
        document = request.json()
        if not isinstance(document, dict) or not isinstance(document.get("events"), list):
            raise PayloadError("events", "must be an array")
        messages: list[Inbound] = []
        for index, event in enumerate(document["events"]):
            path = f"events[{index}]"
            if not isinstance(event, dict):
                raise PayloadError(path, "must be an object")
            if event.get("type") == "message":
                messages.append(_message(event, path, channel))
        return messages

    async def send(
        self, client: httpx.AsyncClient, channel: AdapterChannel, message: OutboundMessage
    ) -> DeliveryOutcome:
        base = str(channel.options.get("api_base_url") or LINE_API).rstrip("/")
        token = channel.secrets.get("channel_access_token")
        if not token:
            return DeliveryOutcome.failed(
                "channel_misconfigured", "no channel_access_token secret", retryable=False
            )
        parts = [message.text or "", *(attachment.url for attachment in message.attachments)]
        body = {
            "to": message.recipient_address,
            "messages": [{"type": "text", "text": "\n".join(p for p in parts if p)[:5000]}],
        }
        try:
            response = await client.post(
                f"{base}/v2/bot/message/push",
                json=body,
                headers={
                    "Authorization": f"Bearer {token}",
                    "X-Line-Retry-Key": _retry_key(message),
                },
            )
        except httpx.HTTPError as error:
            return DeliveryOutcome.failed("network", f"{type(error).__name__}", retryable=True)
        if response.is_success:
            sent = _json(response).get("sentMessages") or [{}]
            return DeliveryOutcome.sent(str(sent[0].get("id") or message.message_id))
        retryable = response.status_code == 429 or response.status_code >= 500
        detail = str(_json(response).get("message") or response.reason_phrase)
        return DeliveryOutcome.failed(str(response.status_code), detail, retryable=retryable)


def _message(event: Mapping[str, Any], path: str, channel: AdapterChannel) -> InboundMessage:
    message = event.get("message")
    source = event.get("source")
    if not isinstance(message, dict):
        raise PayloadError(f"{path}.message", "must be an object")
    if not isinstance(source, dict) or not isinstance(source.get("userId"), str):
        raise PayloadError(f"{path}.source.userId", "must be a string")
    message_id = message.get("id")
    if not isinstance(message_id, str) or not message_id:
        raise PayloadError(f"{path}.message.id", "must be a non-empty string")
    timestamp = event.get("timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise PayloadError(f"{path}.timestamp", "must be milliseconds since the epoch")
    try:
        received_at = datetime.fromtimestamp(timestamp / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise PayloadError(f"{path}.timestamp", "is out of range") from None
    kind = message.get("type")
    content: MessageContent
    if kind == "text":
        text = message.get("text")
        if not isinstance(text, str) or not text:
            raise PayloadError(f"{path}.message.text", "must be a non-empty string")
        content = MessageContent(text=text)
    elif kind in _MEDIA:
        filename = message.get("fileName") if isinstance(message.get("fileName"), str) else None
        size = message.get("fileSize") if isinstance(message.get("fileSize"), int) else None
        content = MessageContent(
            attachments=[
                Attachment(
                    url=f"{LINE_API}/v2/bot/message/{message_id}/content",
                    content_type=_MEDIA[kind] or "application/octet-stream",
                    filename=filename,
                    size_bytes=size if size is None or size >= 0 else None,
                )
            ]
        )
    elif kind == "location":
        try:
            location = Location(
                latitude=float(message["latitude"]),
                longitude=float(message["longitude"]),
                label=", ".join(str(message[k]) for k in ("title", "address") if message.get(k))
                or None,
            )
        except (KeyError, TypeError, ValueError):
            raise PayloadError(f"{path}.message", "needs latitude and longitude") from None
        content = MessageContent(location=location)
    elif kind == "sticker":
        content = MessageContent(
            text=f"[sticker {message.get('packageId')}/{message.get('stickerId')}]"
        )
    else:
        raise PayloadError(f"{path}.message.type", f"message type {kind!r} is not supported")
    user_id = source["userId"]
    quoted = message.get("quotedMessageId")
    return InboundMessage(
        provider_message_id=message_id,
        customer=Customer(
            channel=Channel.SOCIAL,
            channel_id=channel.channel_id,
            address=user_id,
            key=external_key(channel.channel_id, user_id),
        ),
        content=content,
        received_at=received_at,
        in_reply_to=quoted if isinstance(quoted, str) else None,
    )


def _retry_key(message: OutboundMessage) -> str:
    """LINE's idempotency key for a push (a UUID): derived from our message id, so a retry
    of the same message is recognised by LINE."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"convohub:{message.message_id}"))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
