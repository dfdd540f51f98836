"""Provider webhooks: Twilio Messaging and Voice, WhatsApp Cloud API. (Raw e-mail and
Mailgun are channel adapters on the SDK, served by `api.adapters`.)

Each verifies the provider's own signature with the channel's secret, parses the
provider's documented format, and answers 2xx only once the event log acknowledged.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response

from convohub.contracts.events.common import Channel
from convohub.ingest.adapters import twilio, whatsapp
from convohub.ingest.adapters.signatures import meta_signature_valid, twilio_signature_valid
from convohub.ingest.api.edge import (
    ChannelEdge,
    EdgeChannel,
    parse_form,
    payload_problem,
    read_body,
    signed_urls,
)
from convohub.ingest.domain.inbound import PayloadError
from convohub.runtime.http import Problem

__all__ = ["webhooks_router"]

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def _twiml() -> Response:
    return Response(EMPTY_TWIML, media_type="text/xml")


async def _verified_twilio_form(request: Request, channel: EdgeChannel) -> dict[str, str]:
    body = await read_body(request, channel.settings.max_body_bytes)
    presented = request.headers.get("x-twilio-signature")
    if not presented:
        raise Problem(401, "missing_signature", "the X-Twilio-Signature header is required")
    params = parse_form(request, body)
    if not twilio_signature_valid(
        channel.secret("auth_token"), signed_urls(request, channel.settings), params, presented
    ):
        raise Problem(403, "invalid_signature", "X-Twilio-Signature does not match")
    return dict(params)


def webhooks_router(edge: ChannelEdge) -> APIRouter:
    router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

    def now() -> Any:
        return edge.context().clock.now()

    @router.post(
        "/twilio/{channel_id}",
        summary="Twilio Messaging webhook (SMS, MMS, WhatsApp via Twilio) and status callbacks",
        response_class=Response,
        responses={200: {"content": {"text/xml": {}}, "description": "Empty TwiML"}},
    )
    async def twilio_messaging(channel_id: str, request: Request) -> Response:
        try:
            channel = edge.channel(channel_id, [Channel.SMS])
        except Problem:
            channel = edge.channel(channel_id, [Channel.WHATSAPP], providers=["twilio"])
        edge.limit(channel, "webhook")
        form = await _verified_twilio_form(request, channel)
        try:
            if twilio.is_status_callback(form):
                status = twilio.parse_status(form, now=now())
                if status is not None:
                    await edge.run(edge.pipeline.status(channel.tenant.id, channel.id, status))
                return _twiml()
            message = twilio.parse_message(
                form,
                channel=channel.config.type,
                channel_id=channel.id,
                now=now(),
                region=channel.settings.default_region,
            )
        except PayloadError as error:
            raise payload_problem(error) from None
        await edge.run(
            edge.pipeline.message(
                channel.tenant.id, message, human_keywords=channel.settings.human_request_keywords
            )
        )
        return _twiml()

    @router.post(
        "/twilio-voice/{channel_id}",
        summary="Twilio Voice status callbacks (and IVR gather results)",
        response_class=Response,
        responses={200: {"content": {"text/xml": {}}, "description": "Empty TwiML"}},
    )
    async def twilio_voice(channel_id: str, request: Request) -> Response:
        channel = edge.channel(channel_id, [Channel.VOICE])
        edge.limit(channel, "webhook")
        form = await _verified_twilio_form(request, channel)
        try:
            call = twilio.parse_call(
                form, channel_id=channel.id, now=now(), region=channel.settings.default_region
            )
        except PayloadError as error:
            raise payload_problem(error) from None
        await edge.run(edge.pipeline.call(channel.tenant.id, call))
        return _twiml()

    def whatsapp_channel(channel_id: str) -> EdgeChannel:
        channel = edge.channel(channel_id, [Channel.WHATSAPP])
        if channel.config.provider == "twilio":
            raise Problem(404, "unknown_channel", f"no such channel: {channel_id!r}")
        return channel

    @router.get(
        "/whatsapp/{channel_id}",
        summary="WhatsApp Cloud API verification handshake",
        response_class=PlainTextResponse,
    )
    async def whatsapp_verify(
        channel_id: str,
        mode: str = Query(alias="hub.mode"),
        verify_token: str = Query(alias="hub.verify_token"),
        challenge: str = Query(alias="hub.challenge", max_length=1024),
    ) -> PlainTextResponse:
        channel = whatsapp_channel(channel_id)
        expected = channel.secret("verify_token")
        if mode != "subscribe" or not hmac.compare_digest(verify_token.encode(), expected.encode()):
            raise Problem(403, "verification_failed", "hub.mode or hub.verify_token is wrong")
        return PlainTextResponse(challenge)

    @router.post("/whatsapp/{channel_id}", summary="WhatsApp Cloud API notifications")
    async def whatsapp_notify(channel_id: str, request: Request) -> dict[str, Any]:
        channel = whatsapp_channel(channel_id)
        edge.limit(channel, "webhook")
        body = await read_body(request, channel.settings.max_body_bytes)
        header = request.headers.get("x-hub-signature-256")
        if not header:
            raise Problem(401, "missing_signature", "the X-Hub-Signature-256 header is required")
        if not meta_signature_valid(channel.secret("app_secret"), body, header):
            raise Problem(403, "invalid_signature", "X-Hub-Signature-256 does not match")
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Problem(400, "bad_request", "the body is not JSON") from None
        try:
            batch = whatsapp.parse_notification(document, channel_id=channel.id)
        except PayloadError as error:
            raise payload_problem(error) from None
        accepted = 0
        for message in batch.messages:
            await edge.run(
                edge.pipeline.message(
                    channel.tenant.id,
                    message,
                    human_keywords=channel.settings.human_request_keywords,
                )
            )
            accepted += 1
        for status in batch.statuses:
            await edge.run(edge.pipeline.status(channel.tenant.id, channel.id, status))
            accepted += 1
        return {"status": "accepted", "items": accepted}

    return router
