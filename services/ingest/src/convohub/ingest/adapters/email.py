"""E-mail in: a raw RFC 5322 message (any mail server can pipe it), or Mailgun's inbound
route (parsed fields, or the raw message as `body-mime`)."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr, parsedate_to_datetime

from convohub.contracts.events.common import Attachment, Channel, MessageContent
from convohub.ingest.domain.email_text import html_to_text, strip_reply
from convohub.ingest.domain.identifiers import (
    InvalidIdentifierError,
    email_key,
    normalise_email,
)
from convohub.ingest.domain.inbound import Customer, InboundMessage, PayloadError

__all__ = ["parse_mailgun", "parse_rfc822"]

_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")


def _ids(header: str | None) -> list[str]:
    return _MESSAGE_ID.findall(header or "")


def _sender(value: str | None, field: str) -> tuple[str, str | None]:
    name, address = parseaddr(value or "")
    try:
        return normalise_email(address), (name or None)
    except InvalidIdentifierError as error:
        raise PayloadError(field, str(error)) from None


def _date(value: str | None, fallback: datetime) -> datetime:
    if not value:
        return fallback
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return fallback
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_rfc822(raw: bytes, *, channel_id: str, now: datetime) -> InboundMessage:
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception:  # the parser is lenient; anything it raises is a malformed message
        raise PayloadError("body", "is not an RFC 5322 message") from None
    assert isinstance(message, EmailMessage)
    try:
        from_header = message["From"]
    except Exception:
        raise PayloadError("From", "is not a valid address header") from None
    address, name = _sender(str(from_header) if from_header else None, "From")
    message_ids = _ids(str(message["Message-ID"] or ""))
    # A message without an id still deserves idempotency: its content is its identity.
    provider_id = message_ids[0] if message_ids else "sha256:" + hashlib.sha256(raw).hexdigest()
    in_reply_to = _ids(str(message["In-Reply-To"] or ""))
    references = _ids(str(message["References"] or ""))
    text = _body_text(message)
    attachments = []
    for index, part in enumerate(message.iter_attachments()):
        payload = part.get_payload(decode=True)
        attachments.append(
            Attachment(
                url=f"urn:convohub:email:{provider_id}:attachment:{index}",
                content_type=part.get_content_type(),
                filename=part.get_filename(),
                size_bytes=len(payload) if isinstance(payload, bytes) else None,
            )
        )
    subject = str(message["Subject"]) if message["Subject"] else None
    if not text and not attachments and not subject:
        raise PayloadError("body", "the message has no text, subject or attachment")
    return InboundMessage(
        provider_message_id=provider_id,
        customer=Customer(
            channel=Channel.EMAIL,
            channel_id=channel_id,
            address=address,
            key=email_key(address),
            display_name=name,
        ),
        content=MessageContent(text=text or None, subject=subject, attachments=attachments),
        received_at=_date(str(message["Date"]) if message["Date"] else None, now),
        thread_refs=tuple(dict.fromkeys([*in_reply_to, *reversed(references)])),
        in_reply_to=in_reply_to[0] if in_reply_to else None,
    )


def _body_text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    try:
        content = body.get_content()
    except (LookupError, ValueError):  # an unknown charset
        payload = body.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if not isinstance(content, str):
        return ""
    if body.get_content_type() == "text/html":
        content = html_to_text(content)
    return strip_reply(content)


def parse_mailgun(form: dict[str, str], *, channel_id: str, now: datetime) -> InboundMessage:
    """Mailgun's inbound route POST: `body-mime` when the route stores the raw message,
    else the parsed fields (`sender`/`from`, `subject`, `stripped-text`, `Message-Id`...)."""
    if form.get("body-mime"):
        return parse_rfc822(form["body-mime"].encode(), channel_id=channel_id, now=now)
    address, name = _sender(form.get("from") or form.get("sender"), "from")
    ids = _ids(form.get("Message-Id") or form.get("message-id"))
    if not ids:
        raise PayloadError("Message-Id", "is required")
    text = form.get("stripped-text") or ""
    if not text and form.get("body-plain"):
        text = strip_reply(form["body-plain"])
    if not text and form.get("body-html"):
        text = strip_reply(html_to_text(form["body-html"]))
    in_reply_to = _ids(form.get("In-Reply-To"))
    references = _ids(form.get("References"))
    subject = form.get("subject") or form.get("Subject") or None
    if not text and not subject:
        raise PayloadError("stripped-text", "the message has no text or subject")
    return InboundMessage(
        provider_message_id=ids[0],
        customer=Customer(
            channel=Channel.EMAIL,
            channel_id=channel_id,
            address=address,
            key=email_key(address),
            display_name=name,
        ),
        content=MessageContent(text=text or None, subject=subject),
        received_at=_date(form.get("Date"), now),
        thread_refs=tuple(dict.fromkeys([*in_reply_to, *reversed(references)])),
        in_reply_to=in_reply_to[0] if in_reply_to else None,
    )
