"""The LINE adapter passes ConvoHub's channel adapter conformance kit."""

from __future__ import annotations

import json
from collections.abc import Mapping

from line_channel import line_signature

from convohub.ingest.conformance import ChannelAdapterConformance, KitRequest
from convohub.ingest.sdk import Channel


def line_text_event(message_id: str, text: str = "Hello, my order has not arrived") -> bytes:
    """A webhook body as the LINE Messaging API documents it, with one text message."""
    return json.dumps(
        {
            "destination": "U0123456789abcdef0123456789abcdef",
            "events": [
                {
                    "type": "message",
                    "mode": "active",
                    "timestamp": 1625665242211,
                    "webhookEventId": "01FZ74A0TDDPYRVKNK77XKC3ZR",
                    "deliveryContext": {"isRedelivery": False},
                    "replyToken": "757913772c4646b784d4b7ce46d12671",
                    "source": {"type": "user", "userId": "U4af4980629b2f1a1b5b1f0a1b2c3d4e5"},
                    "message": {"type": "text", "id": message_id, "text": text},
                }
            ],
        }
    ).encode()


class TestLineConformance(ChannelAdapterConformance):
    adapter_name = "line"
    channel_type = Channel.SOCIAL
    secrets: Mapping[str, str] = {"channel_secret": "kit-line-channel-secret"}

    def message(self, message_id: str) -> KitRequest:
        return KitRequest(line_text_event(message_id), {"Content-Type": "application/json"})

    def sign(self, request: KitRequest, url: str, secrets: Mapping[str, str]) -> KitRequest:
        signature = line_signature(secrets["channel_secret"], request.body)
        return KitRequest(request.body, {**request.headers, "X-Line-Signature": signature})
