"""The LINE format without a hub: parsing documented payloads, refusing bad ones, and
sending a push message to a fake LINE API (httpx.MockTransport)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
from line_channel import LineAdapter, line_signature

from convohub.ingest.domain.settings import ChannelSettings
from convohub.ingest.sdk import (
    AdapterChannel,
    Channel,
    InboundMessage,
    OutboundMessage,
    PayloadError,
    SignatureInvalid,
    SignatureMissing,
    WebhookRequest,
)

SECRET = "line-secret"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CHANNEL = AdapterChannel(
    tenant_id="acme",
    channel_id="line-main",
    type=Channel.SOCIAL,
    provider="line",
    settings=ChannelSettings(),
    options={"api_base_url": "https://line.test"},
    secrets={"channel_secret": SECRET, "channel_access_token": "token-1"},
    now=NOW,
)


def request(document: object, signature: str | None = "sign") -> WebhookRequest:
    body = json.dumps(document).encode()
    headers = {"content-type": "application/json"}
    if signature == "sign":
        headers["x-line-signature"] = line_signature(SECRET, body)
    elif signature is not None:
        headers["x-line-signature"] = signature
    return WebhookRequest("POST", "https://hub/v1/webhooks/line/line-main", headers, body)


def event(message: dict[str, object]) -> dict[str, object]:
    return {
        "type": "message",
        "timestamp": 1625665242211,
        "source": {"type": "user", "userId": "U4af4980629b2f1a1"},
        "replyToken": "757913772c4646b784d4b7ce46d12671",
        "message": message,
    }


def test_signature_is_checked() -> None:
    adapter = LineAdapter()
    adapter.verify(request({"events": []}), CHANNEL)
    with pytest.raises(SignatureMissing):
        adapter.verify(request({"events": []}, signature=None), CHANNEL)
    with pytest.raises(SignatureInvalid):
        adapter.verify(request({"events": []}, signature="AAAA"), CHANNEL)


def test_text_media_location_and_other_events() -> None:
    document = {
        "destination": "Uxxxxxxxx",
        "events": [
            event({"type": "text", "id": "1001", "text": "Hi", "quotedMessageId": "999"}),
            event({"type": "image", "id": "1002", "contentProvider": {"type": "line"}}),
            event({"type": "file", "id": "1003", "fileName": "invoice.pdf", "fileSize": 2048}),
            event(
                {
                    "type": "location",
                    "id": "1004",
                    "title": "Office",
                    "address": "1 Main St",
                    "latitude": 35.65910807942215,
                    "longitude": 139.70372892916203,
                }
            ),
            {"type": "follow", "timestamp": 1625665242211, "source": {"userId": "U1"}},
        ],
    }
    items = LineAdapter().parse(request(document), CHANNEL)
    assert [item.provider_message_id for item in items] == ["1001", "1002", "1003", "1004"]
    assert all(isinstance(item, InboundMessage) for item in items)
    text, image, file, place = items
    assert text.content.text == "Hi"
    assert text.in_reply_to == "999"
    assert text.customer.address == "U4af4980629b2f1a1"
    assert text.customer.channel is Channel.SOCIAL
    assert text.customer.channel_id == "line-main"
    assert text.received_at == datetime(2021, 7, 7, 13, 40, 42, 211000, tzinfo=UTC)
    assert image.content.attachments[0].content_type == "image/jpeg"
    assert file.content.attachments[0].filename == "invoice.pdf"
    assert place.content.location is not None
    assert place.content.location.label == "Office, 1 Main St"


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"events": "nope"}, "events"),
        ({"events": [event({"type": "text", "text": "no id"})]}, "events[0].message.id"),
        ({"events": [event({"type": "poll", "id": "1"})]}, "events[0].message.type"),
    ],
)
def test_malformed_payloads_name_the_field(document: object, field: str) -> None:
    with pytest.raises(PayloadError) as raised:
        LineAdapter().parse(request(document), CHANNEL)
    assert raised.value.field == field


async def test_push_message_to_a_fake_line_api() -> None:
    seen: list[httpx.Request] = []

    def line_api(call: httpx.Request) -> httpx.Response:
        seen.append(call)
        if json.loads(call.content)["to"] == "U-unreachable":
            return httpx.Response(400, json={"message": "The user hasn't added the bot"})
        return httpx.Response(200, json={"sentMessages": [{"id": "461230966842064897"}]})

    message = OutboundMessage("msg-1", "conv-1", "U4af4980629b2f1a1", "We are on it")
    async with httpx.AsyncClient(transport=httpx.MockTransport(line_api)) as client:
        sent = await LineAdapter().send(client, CHANNEL, message)
        refused = await LineAdapter().send(
            client, CHANNEL, OutboundMessage("msg-2", "conv-1", "U-unreachable", "Hello")
        )
    assert sent.delivered
    assert sent.provider_message_id == "461230966842064897"
    assert not refused.delivered
    assert refused.error_code == "400"
    assert not refused.retryable
    assert str(seen[0].url) == "https://line.test/v2/bot/message/push"
    assert seen[0].headers["authorization"] == "Bearer token-1"
    assert json.loads(seen[0].content)["messages"] == [{"type": "text", "text": "We are on it"}]
    assert seen[0].headers["x-line-retry-key"] != seen[1].headers["x-line-retry-key"]
