"""Provider formats of outbound delivery, called directly against fakes on loopback: what
is sent, and which failures are retried."""

from __future__ import annotations

from typing import Any

import httpx
from aiosmtpd.controller import Controller

from convohub.ingest.adapters.outbound import send_message
from convohub.runtime.config import ChannelConfig
from services.ingest.tests.fake_providers import fake_http_provider, free_port


def delivery(address: str = "+8613800138000", text: str = "hello") -> dict[str, Any]:
    return {
        "message_id": "msg-1",
        "recipient": {"channel": "whatsapp", "channel_id": "c", "address": address},
        "content": {"text": text, "attachments": []},
        "email_headers": {},
    }


def channel(kind: str, provider: str | None = None, **settings: Any) -> ChannelConfig:
    secrets = settings.pop("secrets", {})
    return ChannelConfig.model_validate(
        {"id": "c", "type": kind, "provider": provider, "settings": settings, "secrets": secrets}
    )


async def test_whatsapp_through_twilio_prefixes_both_numbers_and_uses_a_messaging_service() -> None:
    async with fake_http_provider([], (201, {"sid": "SM1"})) as twilio:
        config = channel(
            "whatsapp",
            "twilio",
            api_base_url=twilio.base_url,
            account_sid="AC1",
            messaging_service_sid="MG1",
            secrets={"auth_token": "t"},
        )
        async with httpx.AsyncClient() as client:
            outcome = await send_message(client, config, delivery())
    assert outcome.delivered
    assert outcome.provider_message_id == "SM1"
    form = twilio.requests[0].form()
    assert form == {"To": "whatsapp:+8613800138000", "Body": "hello", "MessagingServiceSid": "MG1"}


async def test_twilio_client_errors_are_permanent_and_server_errors_are_retried() -> None:
    script = [(400, {"code": 21211, "message": "The 'To' number is not valid"}), (502, {})]
    async with fake_http_provider(script, (201, {"sid": "SM1"})) as twilio:
        config = channel(
            "sms",
            "twilio",
            api_base_url=twilio.base_url,
            account_sid="AC1",
            from_number="+14155550100",
            secrets={"auth_token": "t"},
        )
        async with httpx.AsyncClient() as client:
            invalid = await send_message(client, config, delivery())
            unavailable = await send_message(client, config, delivery())
    assert (invalid.error_code, invalid.retryable) == ("21211", False)
    assert (unavailable.error_code, unavailable.retryable) == ("502", True)


async def test_unreachable_provider_is_retried_and_a_misconfigured_channel_is_not() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    config = channel(
        "whatsapp", api_base_url=closed, phone_number_id="1", secrets={"access_token": "t"}
    )
    no_token = channel("whatsapp", api_base_url=closed, phone_number_id="1")
    async with httpx.AsyncClient() as client:
        unreachable = await send_message(client, config, delivery())
        misconfigured = await send_message(client, no_token, delivery())
        voice = await send_message(client, channel("voice"), delivery())
    assert (unreachable.error_code, unreachable.retryable) == ("network", True)
    assert (misconfigured.error_code, misconfigured.retryable) == ("channel_misconfigured", False)
    assert (voice.error_code, voice.retryable) == ("unsupported_channel", False)


class _RefusingMailbox:
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        return "550 5.1.1 no such user"


async def test_smtp_refusal_is_permanent_and_an_absent_server_is_retried() -> None:
    port = free_port()
    config = channel("email", smtp_host="127.0.0.1", smtp_port=port, from_address="s@acme.example")
    message = delivery("nobody@example.cn")
    async with httpx.AsyncClient() as client:
        absent = await send_message(client, config, message)
        controller = Controller(_RefusingMailbox(), hostname="127.0.0.1", port=port)
        controller.start()
        try:
            refused = await send_message(client, config, message)
        finally:
            controller.stop()
    assert absent.retryable
    assert not absent.delivered
    assert (refused.error_code, refused.retryable) == ("550", False)
