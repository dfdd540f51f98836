"""Facebook Messenger (Meta's Messenger Platform): page webhooks in, the Send API out.

- In: `POST /v1/webhooks/messenger/{channel_id}` with a JSON body
  `{"object": "page", "entry": [{"id": PAGE_ID, "time", "messaging": [...]}]}`, signed in
  `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body with the app secret>`.
  A `message` from a customer (text, attachments, a quick reply, a reply to an earlier
  message) and a `postback` (a button tap) become customer messages whose provider message
  id is Meta's `mid`; the customer is the page-scoped id (PSID) of `sender.id`. A
  `delivery` receipt becomes a `delivered` status of each listed `mid`. The page's own
  messages (`is_echo`), read receipts (only a watermark, no message ids), reactions, edits
  and every other event are acknowledged and ignored. With `settings.page_id` set, an entry
  of another page is refused (422), so a misrouted subscription is noticed.
- Out: `POST {api_base_url}/{api_version}/{page_id}/messages` (`/me/messages` without a
  page id) with the page access token, `messaging_type: RESPONSE` (or `MESSAGE_TAG` with
  `settings.message_tag`, e.g. `HUMAN_AGENT`, to answer after Meta's 24-hour window).

Meta's GET verification handshake (`hub.mode`, `hub.verify_token`, `hub.challenge`) is not
served: the channel adapter SDK has no GET hook yet (see docs/channels.md).
"""

from __future__ import annotations

import hmac
import mimetypes
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from convohub.ingest.adapters.signatures import meta_signature_valid
from convohub.ingest.domain.desk import http_status_is_retryable
from convohub.ingest.sdk import (
    AdapterChannel,
    Attachment,
    Channel,
    ChannelAdapter,
    Customer,
    DeliveryOutcome,
    Inbound,
    InboundMessage,
    InboundStatus,
    Location,
    MessageContent,
    OutboundMessage,
    PayloadError,
    RequestRejected,
    SignatureInvalid,
    SignatureMissing,
    StatusKind,
    WebhookReply,
    WebhookRequest,
    external_key,
)

__all__ = ["GRAPH_API", "GRAPH_API_VERSION", "SIGNATURE_HEADER", "MessengerAdapter"]

GRAPH_API = "https://graph.facebook.com"
GRAPH_API_VERSION = "v21.0"
SIGNATURE_HEADER = "X-Hub-Signature-256"
TEXT_LIMIT = 2000  # the Send API refuses longer texts
_DEFAULT_MEDIA = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "audio": "audio/mpeg",
    "sticker": "image/png",
}
# Graph API error codes that say "try again later" although the HTTP status is 400:
# unknown/temporary errors and the rate limits (developers.facebook.com, error codes).
_TRANSIENT_CODES = frozenset({1, 2, 4, 17, 32, 613})


class MessengerAdapter(ChannelAdapter):
    name = "messenger"
    summary = "Facebook Messenger page webhook (X-Hub-Signature-256)"
    channel_types = (Channel.SOCIAL,)
    required_secrets = ("app_secret",)

    def verify(self, request: WebhookRequest, channel: AdapterChannel) -> None:
        presented = request.header(SIGNATURE_HEADER)
        if not presented:
            raise SignatureMissing(f"the {SIGNATURE_HEADER} header is required")
        if not meta_signature_valid(channel.secret("app_secret"), request.body, presented):
            raise SignatureInvalid(f"{SIGNATURE_HEADER} does not match")

    def handshake(self, request: WebhookRequest, channel: AdapterChannel) -> WebhookReply:
        """Meta's subscription check: echo `hub.challenge` when `hub.mode` is `subscribe`
        and `hub.verify_token` is the channel's `verify_token` secret."""
        expected = channel.secret("verify_token")
        token, challenge = request.param("hub.verify_token"), request.param("hub.challenge")
        if request.param("hub.mode") != "subscribe" or not hmac.compare_digest(
            (token or "").encode(), expected.encode()
        ):
            raise RequestRejected(
                "hub.mode or hub.verify_token is wrong", status=403, code="verification_failed"
            )
        if not challenge or len(challenge) > 1024:
            raise RequestRejected("hub.challenge must be 1 to 1024 characters")
        return WebhookReply(200, challenge.encode(), "text/plain")

    def parse(self, request: WebhookRequest, channel: AdapterChannel) -> Sequence[Inbound]:
        document = request.json()
        if not isinstance(document, dict):
            raise PayloadError("body", "must be an object")
        if document.get("object") != "page":
            raise PayloadError("object", 'must be "page" (a Messenger page subscription)')
        page_id = channel.options.get("page_id")
        items: list[Inbound] = []
        for entry_index, entry in enumerate(_list(document.get("entry"), "entry")):
            entry_path = f"entry[{entry_index}]"
            entry = _object(entry, entry_path)
            entry_page = _identifier(entry.get("id"), f"{entry_path}.id")
            if page_id is not None and entry_page != str(page_id):
                raise PayloadError(f"{entry_path}.id", "is not this channel's page (page_id)")
            messaging = _list(entry.get("messaging"), f"{entry_path}.messaging")
            for index, event in enumerate(messaging):
                path = f"{entry_path}.messaging[{index}]"
                parsed = _event(_object(event, path), path, entry_page, channel)
                items.extend(parsed)
        return items

    async def send(
        self, client: httpx.AsyncClient, channel: AdapterChannel, message: OutboundMessage
    ) -> DeliveryOutcome:
        token = channel.secrets.get("page_access_token")
        if not token:
            return DeliveryOutcome.failed(
                "channel_misconfigured", "no page_access_token secret", retryable=False
            )
        parts = [message.text or "", *(attachment.url for attachment in message.attachments)]
        text = "\n".join(part for part in parts if part)
        if not text:
            return DeliveryOutcome.failed("empty_message", "nothing to send", retryable=False)
        options = channel.options
        base = str(options.get("api_base_url") or GRAPH_API).rstrip("/")
        version = str(options.get("api_version") or GRAPH_API_VERSION)
        page = str(options.get("page_id") or "me")
        body: dict[str, Any] = {
            "recipient": {"id": message.recipient_address},
            "messaging_type": "RESPONSE",
            "message": {"text": text[:TEXT_LIMIT]},
        }
        if options.get("message_tag"):
            body["messaging_type"] = "MESSAGE_TAG"
            body["tag"] = str(options["message_tag"])
        try:
            response = await client.post(
                f"{base}/{version}/{page}/messages",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as error:
            return DeliveryOutcome.failed("network", type(error).__name__, retryable=True)
        answer = _json(response)
        if response.is_success and answer.get("message_id"):
            return DeliveryOutcome.sent(str(answer["message_id"]))
        error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
        code = error.get("code")
        retryable = (
            http_status_is_retryable(response.status_code)
            or error.get("is_transient") is True
            or code in _TRANSIENT_CODES
        )
        detail = str(error.get("message") or response.reason_phrase)
        return DeliveryOutcome.failed(
            str(code or response.status_code), detail, retryable=retryable
        )


def _event(
    event: Mapping[str, Any], path: str, page_id: str, channel: AdapterChannel
) -> list[Inbound]:
    if isinstance(event.get("delivery"), dict):
        return _deliveries(event["delivery"], f"{path}.delivery")
    message = event.get("message")
    postback = event.get("postback")
    if message is None and postback is None:
        return []  # read receipts, reactions, edits, opt-ins, referrals...
    if isinstance(message, dict) and message.get("is_echo") is True:
        return []  # the page's own message, already known as our outbound
    sender = _object(event.get("sender"), f"{path}.sender")
    psid = _identifier(sender.get("id"), f"{path}.sender.id")
    if psid == page_id:
        return []  # an echo without the flag: the page wrote it
    received_at = _millis(event.get("timestamp"), f"{path}.timestamp")
    if message is not None:
        content, provider_id, in_reply_to = _message(_object(message, f"{path}.message"), path)
    else:
        postback = _object(postback, f"{path}.postback")
        title, payload = postback.get("title"), postback.get("payload")
        content = MessageContent(
            text=title if isinstance(title, str) and title else None,
            interactive_reply_id=str(payload) if payload not in (None, "") else None,
        )
        mid = postback.get("mid")
        # Older postbacks carry no mid: sender and time identify the tap across retries.
        tapped = event["timestamp"]
        provider_id = mid if isinstance(mid, str) and mid else f"postback:{psid}:{tapped}"
        in_reply_to = None
    return [
        InboundMessage(
            provider_message_id=provider_id,
            customer=Customer(
                channel=Channel.SOCIAL,
                channel_id=channel.channel_id,
                address=psid,
                key=external_key(channel.channel_id, psid),  # a PSID is one page's id
            ),
            content=content,
            received_at=received_at,
            in_reply_to=in_reply_to,
        )
    ]


def _message(message: Mapping[str, Any], path: str) -> tuple[MessageContent, str, str | None]:
    mid = message.get("mid")
    if not isinstance(mid, str) or not mid:
        raise PayloadError(f"{path}.message.mid", "must be a non-empty string")
    text = message.get("text")
    if text is not None and not isinstance(text, str):
        raise PayloadError(f"{path}.message.text", "must be a string")
    attachments: list[Attachment] = []
    location: Location | None = None
    for index, item in enumerate(_list(message.get("attachments"), f"{path}.message.attachments")):
        item_path = f"{path}.message.attachments[{index}]"
        item = _object(item, item_path)
        kind = item.get("type")
        payload = item.get("payload") if isinstance(item.get("payload"), dict) else {}
        coordinates = payload.get("coordinates")
        if kind == "location" and isinstance(coordinates, dict):
            try:
                location = Location(
                    latitude=float(coordinates["lat"]),
                    longitude=float(coordinates["long"]),
                    label=item.get("title") if isinstance(item.get("title"), str) else None,
                )
            except (KeyError, TypeError, ValueError):
                where = f"{item_path}.payload.coordinates"
                raise PayloadError(where, "needs lat and long") from None
            continue
        url = payload.get("url")
        if not isinstance(url, str) or not url:
            continue  # a fallback share without content, a template: nothing to keep
        title = item.get("title") or payload.get("title")
        attachments.append(
            Attachment(
                url=url,
                content_type=_content_type(str(kind), url),
                filename=title if isinstance(title, str) and title else None,
            )
        )
    quick_reply = message.get("quick_reply")
    reply_id = quick_reply.get("payload") if isinstance(quick_reply, dict) else None
    reply_to = message.get("reply_to")
    in_reply_to = reply_to.get("mid") if isinstance(reply_to, dict) else None
    if not text and not attachments and location is None:
        raise PayloadError(f"{path}.message", "has no text, attachment or location")
    content = MessageContent(
        text=text or None,
        attachments=attachments,
        location=location,
        interactive_reply_id=str(reply_id) if reply_id not in (None, "") else None,
    )
    return content, mid, in_reply_to if isinstance(in_reply_to, str) else None


def _deliveries(delivery: Mapping[str, Any], path: str) -> list[Inbound]:
    mids = _list(delivery.get("mids"), f"{path}.mids")
    if not mids:
        return []  # only a watermark: it names no message
    at = _millis(delivery.get("watermark"), f"{path}.watermark")
    statuses: list[Inbound] = []
    for index, mid in enumerate(mids):
        if not isinstance(mid, str) or not mid:
            raise PayloadError(f"{path}.mids[{index}]", "must be a non-empty string")
        statuses.append(InboundStatus(provider_message_id=mid, state=StatusKind.DELIVERED, at=at))
    return statuses


def _content_type(kind: str, url: str) -> str:
    """Meta names only the kind of media: the URL's extension tells the type when it agrees."""
    guessed, _ = mimetypes.guess_type(urlsplit(url).path)
    family = {"sticker": "image"}.get(kind, kind)
    if guessed and (kind not in _DEFAULT_MEDIA or guessed.startswith(f"{family}/")):
        return guessed
    return _DEFAULT_MEDIA.get(kind, "application/octet-stream")


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(path, "must be an object")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(path, "must be an array")
    return value


def _identifier(value: Any, path: str) -> str:
    """A Graph id: Meta writes them as strings, older payloads as numbers."""
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise PayloadError(path, "must be a non-empty string")
    return str(value)


def _millis(value: Any, path: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(path, "must be milliseconds since the epoch")
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise PayloadError(path, "is out of range") from None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
