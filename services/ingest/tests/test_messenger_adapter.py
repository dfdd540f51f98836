"""The Facebook Messenger adapter: the conformance kit, Meta's documented webhook payloads,
the Send API against a fake Graph API (httpx.MockTransport), and one webhook end to end onto
the embedded log."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from convohub.ingest.adapters.messenger import MessengerAdapter
from convohub.ingest.bootstrap import create_service
from convohub.ingest.conformance import ChannelAdapterConformance, KitRequest
from convohub.ingest.domain.settings import ChannelSettings
from convohub.ingest.sdk import (
    AdapterChannel,
    Channel,
    InboundMessage,
    InboundStatus,
    OutboundMessage,
    PayloadError,
    RequestRejected,
    SignatureInvalid,
    SignatureMissing,
    StatusKind,
    WebhookRequest,
    load_adapters,
)
from convohub.runtime.config import parse_config
from tests.support.hub import backend_for, running_hub

APP_SECRET = "messenger-app-secret"
PAGE_ID = "682498302938465"  # the page of Meta's attachment example
PSID = "1254459154682919"
CHANNEL = AdapterChannel(
    tenant_id="acme",
    channel_id="dm-main",
    type=Channel.SOCIAL,
    provider="messenger",
    settings=ChannelSettings(),
    options={"page_id": PAGE_ID, "api_base_url": "https://graph.test"},
    secrets={"app_secret": APP_SECRET, "page_access_token": "page-token-1"},
    now=datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
)


def meta_signature(app_secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` Meta sends with `body`."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def page_webhook(*messaging: Mapping[str, Any], page_id: str = PAGE_ID) -> dict[str, Any]:
    """Meta's envelope around messaging events: one entry of one page."""
    return {
        "object": "page",
        "entry": [{"id": page_id, "time": 1518479195594, "messaging": list(messaging)}],
    }


def from_customer(message: Mapping[str, Any], psid: str = PSID) -> dict[str, Any]:
    return {
        "sender": {"id": psid},
        "recipient": {"id": PAGE_ID},
        "timestamp": 1458692752478,
        "message": dict(message),
    }


def request(document: object, signature: str | None = "sign") -> WebhookRequest:
    body = json.dumps(document).encode()
    headers = {"content-type": "application/json"}
    if signature == "sign":
        headers["x-hub-signature-256"] = meta_signature(APP_SECRET, body)
    elif signature is not None:
        headers["x-hub-signature-256"] = signature
    return WebhookRequest("POST", "https://hub/v1/webhooks/messenger/dm-main", headers, body)


# --- the conformance kit -----------------------------------------------------------------


class TestMessengerConformance(ChannelAdapterConformance):
    adapter_name = "messenger"
    channel_type = Channel.SOCIAL
    secrets: Mapping[str, str] = {"app_secret": "kit-messenger-app-secret"}
    settings: Mapping[str, Any] = {"page_id": PAGE_ID}

    def message(self, message_id: str) -> KitRequest:
        document = page_webhook(from_customer({"mid": message_id, "text": "hello, world!"}))
        return KitRequest(json.dumps(document).encode(), {"Content-Type": "application/json"})

    def sign(self, request: KitRequest, url: str, secrets: Mapping[str, str]) -> KitRequest:
        signature = meta_signature(secrets["app_secret"], request.body)
        return KitRequest(request.body, {**request.headers, "X-Hub-Signature-256": signature})


# --- Meta's documented payloads ---------------------------------------------------------------


def test_the_adapter_serves_messenger_social_channels() -> None:
    registry = load_adapters()
    assert isinstance(registry.adapters["messenger"], MessengerAdapter)
    assert registry.for_channel(Channel.SOCIAL, "messenger") is registry.adapters["messenger"]
    assert registry.for_channel(Channel.SOCIAL, "line") is not registry.adapters["messenger"]


def test_the_signature_is_meta_s_hmac_of_the_raw_body() -> None:
    adapter = MessengerAdapter()
    adapter.verify(request(page_webhook()), CHANNEL)
    with pytest.raises(SignatureMissing):
        adapter.verify(request(page_webhook(), signature=None), CHANNEL)
    for wrong in ("sha256=" + "0" * 64, "sha1=abc", meta_signature("other-secret", b"{}")):
        with pytest.raises(SignatureInvalid):
            adapter.verify(request(page_webhook(), signature=wrong), CHANNEL)


def test_text_reply_quick_reply_and_attachments_as_meta_documents_them() -> None:
    document = page_webhook(
        # The `messages` webhook reference's examples: a text with a quick reply, a reply
        # to an earlier message, and attachments.
        from_customer(
            {
                "mid": "mid.1457764197618:41d102a3e1ae206a38",
                "text": "hello, world!",
                "quick_reply": {"payload": "DEVELOPER_DEFINED_PAYLOAD"},
            }
        ),
        from_customer(
            {
                "mid": "m_1457764197618:41d102a3e1ae206a38",
                "text": "hello, world!",
                "reply_to": {"mid": "m_1fTq8oLumEyIp3Q2MR-aY7IfLZDamVrALniheU"},
            }
        ),
        {
            "sender": {"id": PSID},
            "recipient": {"id": PAGE_ID},
            "timestamp": 1518479195308,
            "message": {
                "mid": "mid.$cAAJdkrCd2ORnva8ErFhjGm0X_Q_c",
                "attachments": [
                    {"type": "image", "payload": {"url": "https://scontent.test/photo.png?x=1"}},
                    {"type": "file", "payload": {"url": "https://cdn.test/invoice.pdf"}},
                    {"type": "fallback", "title": "Shared link"},  # no payload: nothing kept
                    {
                        "type": "location",
                        "title": "Pinned location",
                        "payload": {"coordinates": {"lat": 31.2304, "long": 121.4737}},
                    },
                ],
            },
        },
    )
    items = MessengerAdapter().parse(request(document), CHANNEL)
    assert all(isinstance(item, InboundMessage) for item in items)
    quick, reply, media = items
    assert isinstance(quick, InboundMessage)
    assert isinstance(reply, InboundMessage)
    assert isinstance(media, InboundMessage)
    assert quick.provider_message_id == "mid.1457764197618:41d102a3e1ae206a38"
    assert quick.content.text == "hello, world!"
    assert quick.content.interactive_reply_id == "DEVELOPER_DEFINED_PAYLOAD"
    assert quick.received_at == datetime(2016, 3, 23, 0, 25, 52, 478000, tzinfo=UTC)
    assert quick.customer.channel is Channel.SOCIAL
    assert (quick.customer.channel_id, quick.customer.address) == ("dm-main", PSID)
    assert quick.customer.key == f"external:dm-main:{PSID}"
    assert reply.in_reply_to == "m_1fTq8oLumEyIp3Q2MR-aY7IfLZDamVrALniheU"
    assert media.content.text is None
    image, invoice = media.content.attachments
    assert (image.url, image.content_type) == ("https://scontent.test/photo.png?x=1", "image/png")
    assert invoice.content_type == "application/pdf"
    assert media.content.location is not None
    assert (media.content.location.latitude, media.content.location.label) == (
        31.2304,
        "Pinned location",
    )


def test_echoes_reads_and_other_events_are_ignored_and_deliveries_become_statuses() -> None:
    document = page_webhook(
        # message_echoes: the page's own message.
        {
            "sender": {"id": PAGE_ID},
            "recipient": {"id": PSID},
            "timestamp": 1457764197627,
            "message": {
                "is_echo": True,
                "app_id": 1517776481860111,
                "metadata": "<DEVELOPER_DEFINED_METADATA_STRING>",
                "mid": "mid.1457764197618:41d102a3e1ae206a38",
                "text": "We are on it",
            },
        },
        # message_reads: a watermark names no message.
        {
            "sender": {"id": PSID},
            "recipient": {"id": PAGE_ID},
            "timestamp": 1458668856463,
            "read": {"watermark": 1458668856253},
        },
        # message_deliveries.
        {
            "sender": {"id": PSID},
            "recipient": {"id": PAGE_ID},
            "delivery": {
                "mids": ["mid.1458668856218:ed81099e15d3f4f233"],
                "watermark": 1458668856253,
            },
        },
        {"sender": {"id": PSID}, "recipient": {"id": PAGE_ID}, "delivery": {"watermark": 1}},
        {
            "sender": {"id": PSID},
            "recipient": {"id": PAGE_ID},
            "timestamp": 1458668856463,
            "reaction": {"mid": "m_1", "action": "react", "reaction": "love"},
        },
        # messaging_postbacks: a button tap is a customer's answer.
        {
            "sender": {"id": PSID},
            "recipient": {"id": PAGE_ID},
            "timestamp": 1527459824,
            "postback": {"mid": "m_postback_1", "title": "Track my order", "payload": "TRACK"},
        },
    )
    delivered, tapped = MessengerAdapter().parse(request(document), CHANNEL)
    assert isinstance(delivered, InboundStatus)
    assert delivered.provider_message_id == "mid.1458668856218:ed81099e15d3f4f233"
    assert delivered.state is StatusKind.DELIVERED
    assert delivered.at == datetime(2016, 3, 22, 17, 47, 36, 253000, tzinfo=UTC)
    assert isinstance(tapped, InboundMessage)
    assert tapped.provider_message_id == "m_postback_1"
    assert (tapped.content.text, tapped.content.interactive_reply_id) == ("Track my order", "TRACK")


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"object": "instagram", "entry": []}, "object"),
        ({"object": "page", "entry": {}}, "entry"),
        (page_webhook(page_id="999"), "entry[0].id"),
        (page_webhook(from_customer({"text": "no mid"})), "entry[0].messaging[0].message.mid"),
        (page_webhook(from_customer({"mid": "m_1"})), "entry[0].messaging[0].message"),
        (
            page_webhook({"recipient": {"id": PAGE_ID}, "message": {"mid": "m_1", "text": "x"}}),
            "entry[0].messaging[0].sender",
        ),
        (
            page_webhook({**from_customer({"mid": "m_1", "text": "x"}), "timestamp": "soon"}),
            "entry[0].messaging[0].timestamp",
        ),
    ],
)
def test_malformed_payloads_name_the_field(document: object, field: str) -> None:
    with pytest.raises(PayloadError) as raised:
        MessengerAdapter().parse(request(document), CHANNEL)
    assert raised.value.field == field


# --- the Send API ----------------------------------------------------------------------------


async def test_a_reply_goes_through_the_send_api_and_failures_say_whether_to_retry() -> None:
    seen: list[httpx.Request] = []
    answers = {
        PSID: httpx.Response(200, json={"recipient_id": PSID, "message_id": "m_sent_1"}),
        "window-closed": httpx.Response(
            400,
            json={
                "error": {
                    "message": "This message is sent outside of allowed window.",
                    "type": "OAuthException",
                    "code": 10,
                    "error_subcode": 2018278,
                }
            },
        ),
        "rate-limited": httpx.Response(
            400,
            json={
                "error": {"message": "Calls to this api have exceeded the rate limit.", "code": 613}
            },
        ),
        "graph-down": httpx.Response(503, text="Service Unavailable"),
    }

    def graph_api(call: httpx.Request) -> httpx.Response:
        seen.append(call)
        return answers[json.loads(call.content)["recipient"]["id"]]

    adapter = MessengerAdapter()
    async with httpx.AsyncClient(transport=httpx.MockTransport(graph_api)) as client:

        async def send(recipient: str, channel: AdapterChannel = CHANNEL) -> Any:
            message = OutboundMessage("msg-1", "conv-1", recipient, "Your parcel left today")
            return await adapter.send(client, channel, message)

        sent = await send(PSID)
        closed, limited, down = [
            await send(r) for r in ("window-closed", "rate-limited", "graph-down")
        ]
        tagged = replace(CHANNEL, options={**CHANNEL.options, "message_tag": "HUMAN_AGENT"})
        await send(PSID, tagged)
        untokened = replace(CHANNEL, secrets={"app_secret": APP_SECRET})
        unconfigured = await send(PSID, untokened)

    assert (sent.delivered, sent.provider_message_id) == (True, "m_sent_1")
    first = seen[0]
    assert str(first.url) == f"https://graph.test/v21.0/{PAGE_ID}/messages"
    assert first.headers["authorization"] == "Bearer page-token-1"
    assert json.loads(first.content) == {
        "recipient": {"id": PSID},
        "messaging_type": "RESPONSE",
        "message": {"text": "Your parcel left today"},
    }
    assert (closed.delivered, closed.error_code, closed.retryable) == (False, "10", False)
    assert (limited.error_code, limited.retryable) == ("613", True)
    assert (down.error_code, down.retryable) == ("503", True)
    tagged_body = json.loads(seen[-1].content)
    assert (tagged_body["messaging_type"], tagged_body["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")
    assert len(seen) == 5, "no request without a page access token"
    assert (unconfigured.error_code, unconfigured.retryable) == ("channel_misconfigured", False)


# --- end to end ------------------------------------------------------------------------------


async def test_a_signed_webhook_lands_on_the_log_once_as_the_page_s_customer(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    config = parse_config(
        f"""
tenants:
  - id: acme
    name: Acme
    channels:
      - id: dm-main
        type: social
        provider: messenger
        settings: {{page_id: "{PAGE_ID}"}}
        secrets: {{app_secret: {APP_SECRET}, verify_token: meta-verify-1}}
""",
        {},
    )
    document = page_webhook(
        from_customer({"mid": "m_e2e_1", "text": "Where is my order?"}),
        {
            "sender": {"id": PAGE_ID},
            "recipient": {"id": PSID},
            "timestamp": 1458692752478,
            "message": {"is_echo": True, "mid": "m_echo_1", "text": "Let me check"},
        },
    )
    body = json.dumps(document).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": meta_signature(APP_SECRET, body),
    }
    async with (
        backend_for("embedded", request, tmp_path) as backend,
        running_hub(backend, [create_service(config)], config) as hub,
    ):
        path = "/v1/webhooks/messenger/dm-main"
        # Meta's subscription check, as its dashboard sends it, before any message.
        check = {"hub.mode": "subscribe", "hub.challenge": "1158201444"}
        token = {"hub.verify_token": "meta-verify-1"}
        subscribed = await hub.client.get(path, params={**check, **token})
        assert (subscribed.status_code, subscribed.text) == (200, "1158201444")
        refused = await hub.client.get(path, params={**check, "hub.verify_token": "guess"})
        assert refused.status_code == 403
        assert refused.json()["code"] == "verification_failed"
        answers = [await hub.client.post(path, content=body, headers=headers) for _ in range(2)]
        assert [answer.status_code for answer in answers] == [200, 200], answers[0].text
        assert answers[0].json() == {"status": "accepted", "items": 1}
        forged = await hub.client.post(path, content=body + b" ", headers=headers)
        assert forged.status_code == 403
        assert forged.headers["content-type"].startswith("application/problem+json")
        events = await hub.events("convohub.conversation.v1")
    received = [e for e in events if e.type == "convohub.conversation.message_received.v1"]
    assert [e.data.provider_message_id for e in received] == ["m_e2e_1"]
    (message,) = received
    assert message.tenantid == "acme"
    assert message.data.channel == Channel.SOCIAL
    assert message.data.channel_id == "dm-main"
    assert message.data.content.text == "Where is my order?"
    assert message.data.customer.address == PSID
    started = [e for e in events if e.type == "convohub.conversation.started.v1"]
    assert len(started) == 1


def test_the_handshake_echoes_the_challenge_only_for_the_channel_s_verify_token() -> None:
    adapter = MessengerAdapter()
    channel = replace(CHANNEL, secrets={**CHANNEL.secrets, "verify_token": "vt-1"})

    def check(**query: str) -> WebhookRequest:
        return WebhookRequest("GET", "https://hub.test/", {}, b"", tuple(query.items()))

    good = {"hub.mode": "subscribe", "hub.verify_token": "vt-1", "hub.challenge": "42"}
    reply = adapter.handshake(check(**good), channel)
    assert (reply.status_code, reply.body, reply.media_type) == (200, b"42", "text/plain")
    for wrong in ({"hub.verify_token": "vt-2"}, {"hub.mode": "unsubscribe"}):
        with pytest.raises(RequestRejected) as refused:
            adapter.handshake(check(**{**good, **wrong}), channel)
        assert refused.value.status == 403
    with pytest.raises(RequestRejected) as unconfigured:  # no verify_token secret
        adapter.handshake(check(**good), CHANNEL)
    assert unconfigured.value.code == "channel_not_configured"
