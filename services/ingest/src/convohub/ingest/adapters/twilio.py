"""Twilio's webhook formats: Messaging (SMS, MMS, WhatsApp via Twilio) and Voice status
callbacks, form-encoded, as Twilio documents them."""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime

from convohub.contracts.events.common import Attachment, Channel, Location, MessageContent
from convohub.contracts.events.conversation import CallEndStatus, CallRecording
from convohub.ingest.domain.identifiers import (
    InvalidIdentifierError,
    normalise_phone,
    phone_key,
)
from convohub.ingest.domain.inbound import (
    CallPhase,
    Customer,
    InboundCall,
    InboundMessage,
    InboundStatus,
    PayloadError,
    StatusKind,
)

__all__ = ["parse_call", "parse_message", "parse_status"]

_STATUS = {
    "sent": StatusKind.SENT,
    "delivered": StatusKind.DELIVERED,
    "read": StatusKind.READ,
    "failed": StatusKind.FAILED,
    "undelivered": StatusKind.FAILED,
}
_CALL_PHASE = {
    "queued": CallPhase.STARTED,
    "initiated": CallPhase.STARTED,
    "ringing": CallPhase.STARTED,
    "in-progress": CallPhase.ANSWERED,
    "completed": CallPhase.ENDED,
    "busy": CallPhase.ENDED,
    "no-answer": CallPhase.ENDED,
    "failed": CallPhase.ENDED,
    "canceled": CallPhase.ENDED,
}


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise PayloadError(name, "is required")
    return value


def _phone(form: dict[str, str], name: str, region: str | None) -> str:
    try:
        return normalise_phone(_required(form, name), region)
    except InvalidIdentifierError as error:
        raise PayloadError(name, str(error)) from None


def is_status_callback(form: dict[str, str]) -> bool:
    """A Messaging status callback carries MessageStatus and no Body."""
    return "MessageStatus" in form and "Body" not in form and "NumMedia" not in form


def parse_message(
    form: dict[str, str], *, channel: Channel, channel_id: str, now: datetime, region: str | None
) -> InboundMessage:
    sid = _required(form, "MessageSid") if "MessageSid" in form else _required(form, "SmsSid")
    phone = _phone(form, "From", region)
    channel_kind = Channel.WHATSAPP if form.get("From", "").startswith("whatsapp:") else channel
    try:
        media_count = int(form.get("NumMedia", "0") or 0)
    except ValueError:
        raise PayloadError("NumMedia", "must be a whole number") from None
    attachments = []
    for index in range(max(0, min(media_count, 10))):
        url = form.get(f"MediaUrl{index}")
        if not url:
            raise PayloadError(f"MediaUrl{index}", "is required by NumMedia")
        content_type = form.get(f"MediaContentType{index}") or "application/octet-stream"
        attachments.append(Attachment(url=url, content_type=content_type))
    location = None
    if form.get("Latitude") and form.get("Longitude"):
        try:
            location = Location(
                latitude=float(form["Latitude"]),
                longitude=float(form["Longitude"]),
                label=form.get("Address") or form.get("Label") or None,
            )
        except ValueError:
            raise PayloadError("Latitude", "is not a coordinate") from None
    body = form.get("Body") or None
    if body is None and not attachments and location is None:
        raise PayloadError("Body", "a message needs a Body, media or a location")
    reply_id = form.get("ButtonPayload") or None
    customer = Customer(
        channel=channel_kind,
        channel_id=channel_id,
        address=phone,
        key=phone_key(phone),
        display_name=form.get("ProfileName") or None,
    )
    return InboundMessage(
        provider_message_id=sid,
        customer=customer,
        content=MessageContent(
            text=body, attachments=attachments, location=location, interactive_reply_id=reply_id
        ),
        received_at=now,
    )


def parse_status(form: dict[str, str], *, now: datetime) -> InboundStatus | None:
    """The delivery status, or None for states that are no delivery fact (queued, sending)."""
    sid = _required(form, "MessageSid") if "MessageSid" in form else _required(form, "SmsSid")
    status = _required(form, "MessageStatus").lower()
    state = _STATUS.get(status)
    if state is None:
        return None
    return InboundStatus(
        provider_message_id=sid,
        state=state,
        at=now,
        error_code=form.get("ErrorCode") or None,
        error_message=form.get("ErrorMessage") or None,
    )


def _timestamp(form: dict[str, str], now: datetime) -> datetime:
    raw = form.get("Timestamp")
    if not raw:
        return now
    try:
        return parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        raise PayloadError("Timestamp", "is not an RFC 2822 date") from None


def parse_call(
    form: dict[str, str], *, channel_id: str, now: datetime, region: str | None
) -> InboundCall:
    call_id = _required(form, "CallSid")
    status = _required(form, "CallStatus").lower()
    phase = _CALL_PHASE.get(status)
    if phase is None:
        raise PayloadError("CallStatus", f"unknown call status {status!r}")
    direction = form.get("Direction", "inbound").lower()
    inbound = direction.startswith("inbound")
    customer_field, company_field = ("From", "To") if inbound else ("To", "From")
    phone = _phone(form, customer_field, region)
    company = form.get(company_field, "").strip() or "unknown"
    duration = None
    if form.get("CallDuration"):
        try:
            duration = max(0, int(form["CallDuration"]))
        except ValueError:
            raise PayloadError("CallDuration", "must be whole seconds") from None
    recording = None
    if form.get("RecordingUrl"):
        try:
            recording_seconds = max(0, int(form.get("RecordingDuration") or 0))
        except ValueError:
            raise PayloadError("RecordingDuration", "must be whole seconds") from None
        recording = CallRecording(
            provider_recording_id=form.get("RecordingSid") or form["RecordingUrl"].rsplit("/")[-1],
            url=form["RecordingUrl"],
            duration_seconds=recording_seconds,
        )
    end_status = None
    if phase is CallPhase.ENDED:
        end_status = CallEndStatus(status.replace("-", "_"))
    return InboundCall(
        call_id=call_id,
        customer=Customer(
            channel=Channel.VOICE,
            channel_id=channel_id,
            address=phone,
            key=phone_key(phone),
            display_name=form.get("CallerName") or None,
        ),
        company_number=company,
        inbound=inbound,
        phase=phase,
        at=_timestamp(form, now),
        ivr_choice=(form.get("Digits") or "").strip() or None,
        duration_seconds=duration,
        end_status=end_status,
        recording=recording,
    )
