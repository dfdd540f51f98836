"""The channel side's pure parts: the providers' signature schemes checked against the
providers' own documented examples, their payload formats, identifiers, e-mail text,
conversation placement and rate limiting."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convohub.contracts.events.common import Channel
from convohub.ingest.adapters import email as email_format
from convohub.ingest.adapters import twilio, whatsapp
from convohub.ingest.adapters.signatures import (
    mailgun_signature_valid,
    meta_signature_valid,
    twilio_signature,
    twilio_signature_valid,
)
from convohub.ingest.domain.conversations import (
    ConversationState,
    ConversationStatus,
    is_human_request,
    place_contact,
)
from convohub.ingest.domain.email_text import html_to_text, strip_reply
from convohub.ingest.domain.identifiers import (
    InvalidIdentifierError,
    normalise_email,
    normalise_phone,
    whatsapp_phone,
)
from convohub.ingest.domain.inbound import CallPhase, PayloadError, StatusKind
from convohub.ingest.domain.rate_limit import TokenBucket

from .channel_support import (
    MAILGUN_FORM,
    RAW_EMAIL,
    TWILIO_SMS_FORM,
    WHATSAPP_STATUS,
    WHATSAPP_TEXT,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

# Twilio's documented worked example (twilio.com/docs/usage/security and the
# TwilioDevEd/api-snippets signature_validation samples): auth token 12345.
TWILIO_DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def test_twilio_signature_matches_twilios_documented_examples() -> None:
    assert twilio_signature("12345", TWILIO_DOC_URL, TWILIO_DOC_PARAMS.items()) == (
        "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    )
    older = {**TWILIO_DOC_PARAMS, "Caller": "+14158675310", "From": "+14158675310"}
    assert twilio_signature("12345", TWILIO_DOC_URL, older.items()) == (
        "GvWf1cFY/Q7PnoempGyD5oXAezc="
    )
    params = list(TWILIO_DOC_PARAMS.items())
    assert twilio_signature_valid("12345", [TWILIO_DOC_URL], params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not twilio_signature_valid(
        "12346", [TWILIO_DOC_URL], params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    )
    tampered = [*params[:-1], ("To", "+18005551213")]
    assert not twilio_signature_valid(
        "12345", [TWILIO_DOC_URL], tampered, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    )


def test_meta_and_mailgun_signatures() -> None:
    body = b'{"object":"whatsapp_business_account"}'
    good = "sha256=" + hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()
    assert meta_signature_valid("app-secret", body, good)
    assert not meta_signature_valid("app-secret", body + b" ", good)
    assert not meta_signature_valid("app-secret", body, good.replace("sha256=", "sha1="))
    token, timestamp = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0", "1529006854"
    signature = hmac.new(b"key-1", (timestamp + token).encode(), hashlib.sha256).hexdigest()
    assert mailgun_signature_valid("key-1", timestamp, token, signature)
    assert not mailgun_signature_valid("key-2", timestamp, token, signature)
    assert not mailgun_signature_valid("key-1", "1529006855", token, signature)


def test_identifiers_are_normalised() -> None:
    assert normalise_phone("whatsapp:+86 138 0013 8000") == "+8613800138000"
    assert normalise_phone("(415) 867-5310", "US") == "+14158675310"
    assert whatsapp_phone("16505551234") == "+16505551234"
    assert normalise_email("  Zhang.San@Example.COM ") == "zhang.san@example.com"
    with pytest.raises(InvalidIdentifierError):
        normalise_phone("not a number")
    with pytest.raises(InvalidIdentifierError):
        normalise_email("nobody")


def test_twilio_sms_webhook_from_twilios_documentation() -> None:
    message = twilio.parse_message(
        TWILIO_SMS_FORM, channel=Channel.SMS, channel_id="sms-main", now=NOW, region=None
    )
    assert message.provider_message_id == TWILIO_SMS_FORM["MessageSid"]
    assert message.customer.address == "+14158675310"
    assert message.customer.key == "phone:+14158675310"
    assert message.content.text == "Hello from Twilio"
    with pytest.raises(PayloadError) as caught:
        twilio.parse_message(
            {**TWILIO_SMS_FORM, "From": ""},
            channel=Channel.SMS,
            channel_id="s",
            now=NOW,
            region=None,
        )
    assert caught.value.field == "From"


def test_twilio_status_and_voice_callbacks() -> None:
    status = twilio.parse_status(
        {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30007"}, now=NOW
    )
    assert status is not None
    assert status.state is StatusKind.FAILED
    assert status.error_code == "30007"
    assert twilio.parse_status({"MessageSid": "SM1", "MessageStatus": "queued"}, now=NOW) is None
    call = twilio.parse_call(
        {
            "CallSid": "CA1",
            "CallStatus": "completed",
            "From": "+14158675310",
            "To": "+18005551212",
            "Direction": "inbound",
            "CallDuration": "42",
            "Digits": "2",
            "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
            "RecordingSid": "RE1",
            "RecordingDuration": "40",
        },
        channel_id="voice-main",
        now=NOW,
        region=None,
    )
    assert call.phase is CallPhase.ENDED
    assert call.duration_seconds == 42
    assert call.ivr_choice == "2"
    assert call.recording is not None
    assert call.company_number == "+18005551212"


def test_whatsapp_documented_payloads() -> None:
    batch = whatsapp.parse_notification(WHATSAPP_TEXT, channel_id="wa-main")
    (message,) = batch.messages
    assert message.customer.address == "16505551234"
    assert message.customer.key == "phone:+16505551234"
    assert message.customer.display_name == "Kerry Fisher"
    assert message.content.text == "this is a text message"
    assert message.received_at == datetime.fromtimestamp(1669233778, UTC)
    statuses = whatsapp.parse_notification(WHATSAPP_STATUS, channel_id="wa-main").statuses
    assert [status.state for status in statuses] == [StatusKind.DELIVERED]


@pytest.mark.parametrize(
    ("kind", "body", "check"),
    [
        (
            "image",
            {"caption": "receipt", "mime_type": "image/jpeg", "sha256": "x", "id": "1234"},
            lambda c: c.attachments[0].content_type == "image/jpeg" and c.text == "receipt",
        ),
        (
            "location",
            {"latitude": 31.2304, "longitude": 121.4737, "name": "Office", "address": "1 Bund"},
            lambda c: c.location.label == "Office, 1 Bund",
        ),
        (
            "interactive",
            {"type": "button_reply", "button_reply": {"id": "human", "title": "Agent"}},
            lambda c: c.interactive_reply_id == "human" and c.text == "Agent",
        ),
    ],
)
def test_whatsapp_message_kinds(kind: str, body: dict, check: object) -> None:
    document = _whatsapp_with({"type": kind, kind: body})
    (message,) = whatsapp.parse_notification(document, channel_id="wa-main").messages
    assert check(message.content)  # type: ignore[operator]


def test_whatsapp_bad_payload_names_the_field() -> None:
    with pytest.raises(PayloadError) as caught:
        whatsapp.parse_notification(_whatsapp_with({"type": "text", "text": {}}), channel_id="w")
    assert caught.value.field == "entry[0].changes[0].value.messages[0].text.body"


def _whatsapp_with(fields: dict) -> dict:
    message = {"from": "16505551234", "id": "wamid.X", "timestamp": "1669233778", **fields}
    return {"entry": [{"changes": [{"value": {"messages": [message]}}]}]}


def test_raw_email_threading_quotes_signature_and_attachments() -> None:
    message = email_format.parse_rfc822(RAW_EMAIL, channel_id="email-support", now=NOW)
    assert message.provider_message_id == "reply-2@example.com"
    assert message.customer.address == "zhang.san@example.com"
    assert message.customer.display_name == "Zhang San"
    assert message.in_reply_to == "first-1@acme.example"
    assert message.thread_refs[0] == "first-1@acme.example"
    assert message.content.text == "Still waiting for my order, any news?"
    assert message.content.subject == "Re: Order 1234"
    (attachment,) = message.content.attachments
    assert attachment.filename == "invoice.pdf"
    assert attachment.content_type == "application/pdf"
    assert attachment.size_bytes == 9


def test_mailgun_fields() -> None:
    message = email_format.parse_mailgun(MAILGUN_FORM, channel_id="email-support", now=NOW)
    assert message.provider_message_id == "CADp2mGMmhH@mail.gmail.com"
    assert message.customer.address == "bob@example.com"
    assert message.content.text == "Hi Alice, This is Bob."


def test_html_to_text_and_reply_stripping() -> None:
    markup = (
        "<html><style>p{}</style><p>Hello&nbsp;there</p><div>Line two<br>three</div>"
        "<blockquote>old stuff</blockquote></html>"
    )
    assert html_to_text(markup) == "Hello there\n\nLine two\nthree"
    assert strip_reply("Yes please\n\nOn Mon, 1 Jan 2026, Acme wrote:\n> old") == "Yes please"
    assert strip_reply("Thanks!\n-- \nBob\nCEO") == "Thanks!"
    assert strip_reply("好的\n在 2026年11月23日 Acme 写道：\n> 旧") == "好的"


def _state(status: ConversationStatus, channel_id: str = "sms-main", survey: bool = False):
    return ConversationState("conv-1", Channel.SMS, channel_id, status, survey)


def test_place_contact_rules() -> None:
    assert place_contact(None, "sms-main", "conv-new").started
    closed = place_contact(_state(ConversationStatus.CLOSED), "sms-main", "conv-new")
    assert closed.started
    assert closed.conversation_id == "conv-new"
    same = place_contact(_state(ConversationStatus.OPEN), "sms-main", "conv-new")
    assert same.conversation_id == "conv-1"
    assert not (same.started)
    assert not (same.reopened)
    assert same.switched_from is None
    switched = place_contact(_state(ConversationStatus.OPEN), "wa-main", "conv-new")
    assert switched.switched_from == (Channel.SMS, "sms-main")
    assert place_contact(_state(ConversationStatus.RESOLVED), "sms-main", "x").reopened
    surveyed = place_contact(_state(ConversationStatus.RESOLVED, survey=True), "sms-main", "x")
    assert surveyed.conversation_id == "conv-1"
    assert not surveyed.reopened


def test_human_requests() -> None:
    assert is_human_request("转人工")
    assert is_human_request("Agent please")
    assert not is_human_request("My order has not arrived " * 5 + "agent")
    assert not is_human_request(None)


@given(
    rate=st.floats(min_value=0.5, max_value=1000),
    burst=st.integers(min_value=1, max_value=100),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=200),
)
def test_a_token_bucket_never_grants_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst)
    now, granted = 0.0, 0
    for gap in gaps:
        now += gap
        wait = bucket.take(now)
        if wait == 0:
            granted += 1
        else:
            assert wait > 0
    assert granted <= burst + rate * now + 1e-6
    assert granted >= min(len(gaps), burst)
