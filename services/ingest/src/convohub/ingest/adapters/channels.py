"""Built-in channels written against the channel adapter SDK (`convohub.ingest.sdk`) and
registered through the same `convohub.channels` entry points a third-party package uses:
raw e-mail piped by a mail server, and Mailgun's inbound route."""

from __future__ import annotations

import json
from collections.abc import Sequence

from convohub.contracts.events.common import Channel
from convohub.ingest.adapters import email as email_format
from convohub.ingest.adapters.signatures import body_hmac_sha256_valid, mailgun_signature_valid
from convohub.ingest.sdk import (
    AdapterChannel,
    ChannelAdapter,
    Inbound,
    Receipt,
    RequestRejected,
    SignatureInvalid,
    SignatureMissing,
    WebhookReply,
    WebhookRequest,
)

__all__ = ["SIGNATURE_HEADER", "MailgunAdapter", "RawEmailAdapter"]

SIGNATURE_HEADER = "X-ConvoHub-Signature-256"


def _single_receipt_reply(status: int, receipts: Sequence[Receipt]) -> WebhookReply:
    receipt = receipts[0]
    body = {**receipt.outcome, "duplicate": receipt.duplicate}
    return WebhookReply(status, json.dumps(body).encode())


class RawEmailAdapter(ChannelAdapter):
    """A raw RFC 5322 message (`Content-Type: message/rfc822`), signed by the sender with
    `X-ConvoHub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` and the channel's
    `inbound_signing_secret`."""

    name = "email"
    summary = "A raw RFC 5322 e-mail (Content-Type: message/rfc822), signed by the sender"
    channel_types = (Channel.EMAIL,)
    any_provider = True
    required_secrets = ()  # the channel may be Mailgun-only; a raw post without it gets 403
    success_status = 202

    def verify(self, request: WebhookRequest, channel: AdapterChannel) -> None:
        if request.content_type != "message/rfc822":
            raise RequestRejected(
                "send Content-Type: message/rfc822", status=415, code="unsupported_media_type"
            )
        header = request.header(SIGNATURE_HEADER)
        if not header:
            raise SignatureMissing(f"the {SIGNATURE_HEADER} header is required")
        if not body_hmac_sha256_valid(
            channel.secret("inbound_signing_secret"), request.body, header
        ):
            raise SignatureInvalid(f"{SIGNATURE_HEADER} does not match")

    def parse(self, request: WebhookRequest, channel: AdapterChannel) -> Sequence[Inbound]:
        return [
            email_format.parse_rfc822(request.body, channel_id=channel.channel_id, now=channel.now)
        ]

    def reply(self, receipts: Sequence[Receipt]) -> WebhookReply:
        return _single_receipt_reply(self.success_status, receipts)


class MailgunAdapter(ChannelAdapter):
    """Mailgun's inbound route: form fields signed with HMAC-SHA256 of `timestamp` + `token`
    (the account's webhook signing key), refused when the timestamp is older than the
    channel's `signature_tolerance_seconds`."""

    name = "mailgun"
    summary = "Mailgun inbound route (signed)"
    channel_types = (Channel.EMAIL,)
    any_provider = True

    def verify(self, request: WebhookRequest, channel: AdapterChannel) -> None:
        form = dict(request.form())
        timestamp, token, signature = (
            form.get("timestamp", ""),
            form.get("token", ""),
            form.get("signature", ""),
        )
        if not (timestamp and token and signature):
            raise SignatureMissing("timestamp, token and signature are required")
        if not mailgun_signature_valid(
            channel.secret("mailgun_signing_key"), timestamp, token, signature
        ):
            raise SignatureInvalid("the Mailgun signature does not match")
        try:
            age = abs(channel.now.timestamp() - float(timestamp))
        except (ValueError, OverflowError):
            raise SignatureInvalid("timestamp is not a Unix time") from None
        if age > channel.settings.signature_tolerance_seconds:
            raise SignatureInvalid(
                "the signed timestamp is too old (replay?)", code="stale_signature"
            )

    def parse(self, request: WebhookRequest, channel: AdapterChannel) -> Sequence[Inbound]:
        form = dict(request.form())
        return [email_format.parse_mailgun(form, channel_id=channel.channel_id, now=channel.now)]

    def reply(self, receipts: Sequence[Receipt]) -> WebhookReply:
        return _single_receipt_reply(self.success_status, receipts)
