"""The channel side's test material: a two-tenant config with one channel of each kind,
the providers' documented example payloads, and signers that sign as each provider does."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlencode

from convohub.ingest.adapters.signatures import twilio_signature
from convohub.runtime.config import HubConfig, parse_config

BASE = "http://testserver"
SMS_TOKEN = "12345"  # the auth token of Twilio's documented signature example
VOICE_TOKEN = "voice-auth-token-1"
WA_SECRET = "wa-app-secret-1"
WA_VERIFY = "wa-verify-token-1"
EMAIL_SECRET = "email-signing-secret-1"
MAILGUN_KEY = "key-mailgun-signing-1"
API_KEY = "acme-integrator-key-0001"
NARROW_KEY = "acme-narrow-key-000001"
GLOBEX_KEY = "globex-integrator-key-01"
ORIGIN = "https://www.acme.example"


def hub_config(extra_settings: str = "") -> HubConfig:
    return parse_config(
        f"""
tenants:
  - id: acme
    name: Acme
    api_keys:
      - {{key: {API_KEY}, role: agent}}
      - {{key: {NARROW_KEY}, role: agent, channels: [sms-main]}}
    channels:
      - id: sms-main
        type: sms
        provider: twilio
        settings: {{public_base_url: "https://hooks.acme.example"{extra_settings}}}
        secrets: {{auth_token: "{SMS_TOKEN}"}}
      - id: wa-main
        type: whatsapp
        provider: whatsapp-cloud
        secrets: {{app_secret: {WA_SECRET}, verify_token: {WA_VERIFY}}}
      - id: email-support
        type: email
        provider: smtp
        settings: {{signature_tolerance_seconds: 300}}
        secrets: {{inbound_signing_secret: {EMAIL_SECRET}, mailgun_signing_key: {MAILGUN_KEY}}}
      - id: voice-main
        type: voice
        provider: twilio-voice
        secrets: {{auth_token: {VOICE_TOKEN}}}
      - id: web-main
        type: web_chat
        settings: {{allowed_origins: ["{ORIGIN}"]}}
      - id: api-main
        type: api
        settings: {{rate_per_second: 5, rate_burst: 16, max_body_bytes: 2048}}
  - id: globex
    name: Globex
    api_keys:
      - {{key: {GLOBEX_KEY}, role: agent}}
    channels:
      - id: api-globex
        type: api
""",
        {},
    )


def twilio_request(
    path: str, form: dict[str, str], token: str, *, base: str = BASE
) -> dict[str, Any]:
    """Keyword arguments for `client.post`: the form, signed for `base` + path."""
    signature = twilio_signature(token, base + path, form.items())
    return {
        "content": urlencode(form).encode(),
        "headers": {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
    }


def whatsapp_request(document: Any, secret: str = WA_SECRET) -> dict[str, Any]:
    body = json.dumps(document).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "content": body,
        "headers": {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"},
    }


def email_request(raw: bytes, secret: str = EMAIL_SECRET) -> dict[str, Any]:
    digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return {
        "content": raw,
        "headers": {
            "Content-Type": "message/rfc822",
            "X-ConvoHub-Signature-256": f"sha256={digest}",
        },
    }


def mailgun_request(form: dict[str, str], timestamp: str, token: str) -> dict[str, Any]:
    signature = hmac.new(
        MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    signed = {**form, "timestamp": timestamp, "token": token, "signature": signature}
    return {
        "content": urlencode(signed).encode(),
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
    }


# Twilio's documented incoming-SMS webhook parameters
# (twilio.com/docs/messaging/guides/webhook-request).
TWILIO_SMS_FORM = {
    "ToCountry": "US",
    "ToState": "CA",
    "SmsMessageSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    "NumMedia": "0",
    "ToCity": "",
    "FromZip": "94949",
    "SmsSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    "FromState": "CA",
    "SmsStatus": "received",
    "FromCity": "NOVATO",
    "Body": "Hello from Twilio",
    "FromCountry": "US",
    "To": "+18005551212",
    "ToZip": "",
    "NumSegments": "1",
    "MessageSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    "AccountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "From": "+14158675310",
    "ApiVersion": "2010-04-01",
}


def twilio_sms(sid: str, body: str, sender: str = "+14158675310") -> dict[str, str]:
    return {
        **TWILIO_SMS_FORM,
        "MessageSid": sid,
        "SmsSid": sid,
        "SmsMessageSid": sid,
        "Body": body,
        "From": sender,
    }


# Meta's documented "text message" notification (developers.facebook.com, WhatsApp Cloud
# API webhooks, payload examples), with its sample values.
DOC_WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
WHATSAPP_TEXT = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "102290129340398",
            "changes": [
                {
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {
                            "display_phone_number": "15550783881",
                            "phone_number_id": "106540352242922",
                        },
                        "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": "16505551234"}],
                        "messages": [
                            {
                                "from": "16505551234",
                                "id": DOC_WAMID,
                                "timestamp": "1669233778",
                                "text": {"body": "this is a text message"},
                                "type": "text",
                            }
                        ],
                    },
                    "field": "messages",
                }
            ],
        }
    ],
}


def whatsapp_text(wamid: str, body: str, wa_id: str = "16505551234") -> dict[str, Any]:
    document = json.loads(json.dumps(WHATSAPP_TEXT))
    value = document["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["wa_id"] = wa_id
    value["messages"][0].update({"id": wamid, "from": wa_id, "text": {"body": body}})
    return document


# Meta's documented "message status" notification.
WHATSAPP_STATUS = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "102290129340398",
            "changes": [
                {
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {
                            "display_phone_number": "15550783881",
                            "phone_number_id": "106540352242922",
                        },
                        "statuses": [
                            {
                                "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MTE5MjVBOTE3MDk5QUVFM0YA",
                                "status": "delivered",
                                "timestamp": "1750263773",
                                "recipient_id": "16505551234",
                                "pricing": {
                                    "billable": True,
                                    "pricing_model": "PMP",
                                    "category": "utility",
                                },
                            }
                        ],
                    },
                    "field": "messages",
                }
            ],
        }
    ],
}

RAW_EMAIL = (
    b"From: Zhang San <Zhang.San@Example.com>\r\n"
    b"To: support@acme.example\r\n"
    b"Subject: Re: Order 1234\r\n"
    b"Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n"
    b"Message-ID: <reply-2@example.com>\r\n"
    b"In-Reply-To: <first-1@acme.example>\r\n"
    b"References: <first-0@example.com> <first-1@acme.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b'Content-Type: multipart/alternative; boundary="b2"\r\n'
    b"\r\n"
    b"--b2\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Still waiting for my order, any news?\r\n"
    b"\r\n"
    b"On Sun, 22 Nov 2026 at 10:00, Acme Support <support@acme.example> wrote:\r\n"
    b"> Your order ships tomorrow.\r\n"
    b"--b2\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Still waiting for my order, any news?</p><blockquote>old</blockquote>\r\n"
    b"--b2--\r\n"
    b"--b1\r\n"
    b'Content-Type: application/pdf; name="invoice.pdf"\r\n'
    b'Content-Disposition: attachment; filename="invoice.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--b1--\r\n"
)


def raw_email(message_id: str, sender: str, text: str, in_reply_to: str | None = None) -> bytes:
    headers = [
        f"From: {sender}",
        "To: support@acme.example",
        "Subject: Help",
        f"Message-ID: <{message_id}>",
    ]
    if in_reply_to:
        headers += [f"In-Reply-To: <{in_reply_to}>", f"References: <{in_reply_to}>"]
    return ("\r\n".join(headers) + "\r\n\r\n" + text + "\r\n").encode()


# Mailgun's documented inbound-route POST fields (documentation.mailgun.com, "Receiving
# messages"), trimmed to what ingest reads.
MAILGUN_FORM = {
    "recipient": "support@acme.example",
    "sender": "bob@example.com",
    "from": "Bob <bob@example.com>",
    "subject": "Re: Sample POST request",
    "body-plain": "Hi Alice, This is Bob.\n\nOn Tue, Jan 1, 2019 Alice wrote:\n> Hi Bob",
    "stripped-text": "Hi Alice, This is Bob.",
    "stripped-signature": "Thanks, Bob",
    "Message-Id": "<CADp2mGMmhH@mail.gmail.com>",
    "In-Reply-To": "<517AC78B.5060404@example.com>",
    "References": "<517AC78B.5060404@example.com>",
}
