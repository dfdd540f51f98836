"""Outbound delivery: the durable queue of messages to send, what each conversation's
channel needs for a reply (address, e-mail thread), and the providers' send formats.

Providers, each at the channel's configurable base URL (`settings.api_base_url`):

- Twilio Messages API (SMS, and WhatsApp via Twilio): `POST {base}/2010-04-01/Accounts/
  {AccountSid}/Messages.json`, form-encoded `To`, `From` (or `MessagingServiceSid`), `Body`,
  HTTP basic auth with the account SID and the `auth_token` secret.
- WhatsApp Cloud API: `POST {base}/{version}/{phone_number_id}/messages`, JSON, bearer
  `access_token` secret.
- E-mail over SMTP (aiosmtplib), threaded with In-Reply-To and References.
- Web chat and the generic API channel: nothing to send (the widget streams `message_sent`;
  integrators read it), so the message counts as sent.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx
from sqlalchemy import JSON, Column, Index, Integer, String, Table, and_, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.ingest.adapters.desk import moment
from convohub.ingest.adapters.tables import METADATA
from convohub.ingest.domain.desk import (
    DeliveryOutcome,
    RetryPolicy,
    email_thread_headers,
    http_status_is_retryable,
    reply_subject,
)
from convohub.runtime.config import ChannelConfig

__all__ = [
    "OUTBOUND_CUSTOMERS",
    "OUTBOUND_DELIVERIES",
    "OUTBOUND_THREADS",
    "any_due",
    "claim_due",
    "load_threads",
    "purge_outbound_for",
    "retry_policy_of",
    "save_threads",
    "send_message",
]

TWILIO_BASE_URL = "https://api.twilio.com"
WHATSAPP_BASE_URL = "https://graph.facebook.com"
WHATSAPP_API_VERSION = "v21.0"
LEASE_SECONDS = 60.0

OUTBOUND_DELIVERIES = Table(
    "ingest_outbound_deliveries",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("message_id", String(255), primary_key=True),
    Column("conversation_id", String(255), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("channel_id", String(64), nullable=False),
    Column("recipient", JSON),
    Column("content", JSON),
    Column("email_headers", JSON, nullable=False),
    Column("cause", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", String(32), nullable=False),
    Column("lease_until", String(32)),
    Column("provider_message_id", String(255)),
    Column("last_error", String(255)),
    Index("ingest_outbound_deliveries_due", "status", "next_attempt_at"),
)

OUTBOUND_THREADS = Table(
    "ingest_outbound_threads",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("conversation_id", String(255), primary_key=True),
    Column("channel", String(32)),
    Column("channel_id", String(64)),
    Column("customer", JSON),
    Column("email_message_ids", JSON, nullable=False),
    Column("subject", String(998)),
)

OUTBOUND_CUSTOMERS = Table(
    "ingest_outbound_customers",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("customer_id", String(255), primary_key=True),
    Column("conversation_id", String(255), primary_key=True),
)
"""Whose conversation is whose (customer.identified), so the outbound intake can apply
customer.erased itself, in log order, on a rebuild from nothing too."""


_THREAD_COLUMNS = ("channel", "channel_id", "customer", "email_message_ids", "subject")
_LOAD_THREADS = select(OUTBOUND_THREADS).where(
    OUTBOUND_THREADS.c.tenant_id == bindparam("thread_tenant"),
    OUTBOUND_THREADS.c.conversation_id.in_(bindparam("thread_conversations", expanding=True)),
)
_INSERT_THREAD = OUTBOUND_THREADS.insert()
_UPDATE_THREAD = (
    OUTBOUND_THREADS.update()
    .where(
        OUTBOUND_THREADS.c.tenant_id == bindparam("thread_tenant"),
        OUTBOUND_THREADS.c.conversation_id == bindparam("thread_conversation"),
    )
    .values(
        {
            column: bindparam(f"set_{column}", type_=OUTBOUND_THREADS.c[column].type)
            for column in _THREAD_COLUMNS
        }
    )
)


async def load_threads(
    connection: AsyncConnection, tenant_id: str, conversation_ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """The stored threads of these conversations (all columns), by conversation id."""
    parameters = {"thread_tenant": tenant_id, "thread_conversations": sorted(conversation_ids)}
    rows = await connection.execute(_LOAD_THREADS, parameters)
    return {row.conversation_id: dict(row._mapping) for row in rows}


async def save_threads(
    connection: AsyncConnection,
    inserted: Sequence[dict[str, Any]],
    updated: Sequence[dict[str, Any]],
) -> None:
    """Insert new threads and rewrite changed ones (full rows), one executemany each."""
    if inserted:
        await connection.execute(_INSERT_THREAD, list(inserted))
    if updated:
        await connection.execute(
            _UPDATE_THREAD,
            [
                {"thread_tenant": row["tenant_id"], "thread_conversation": row["conversation_id"]}
                | {f"set_{column}": row[column] for column in _THREAD_COLUMNS}
                for row in updated
            ],
        )


async def claim_due(connection: AsyncConnection, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Lease up to `limit` due pending deliveries to this worker (one attempt each).

    On PostgreSQL the rows are locked with SKIP LOCKED, so replicas claim disjoint rows; on
    SQLite the unit of work holds the single write lock. A lease that runs out (the worker
    died mid-send) makes the row due again.
    """
    current = moment(now)
    table = OUTBOUND_DELIVERIES
    query = (
        select(table)
        .where(
            table.c.status == "pending",
            table.c.next_attempt_at <= current,
            or_(table.c.lease_until.is_(None), table.c.lease_until <= current),
        )
        .order_by(table.c.next_attempt_at)
        .limit(limit)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = [dict(row) for row in (await connection.execute(query)).mappings()]
    lease = moment(now + timedelta(seconds=LEASE_SECONDS))
    for row in rows:
        row["attempts"] += 1
        await connection.execute(
            table.update()
            .where(
                and_(table.c.tenant_id == row["tenant_id"], table.c.message_id == row["message_id"])
            )
            .values(attempts=row["attempts"], lease_until=lease)
        )
    return rows


async def any_due(connection: AsyncConnection, now: datetime) -> bool:
    """Whether a delivery is due (a cheap read, so an idle worker takes no write lock)."""
    current = moment(now)
    table = OUTBOUND_DELIVERIES
    query = (
        select(table.c.message_id)
        .where(
            table.c.status == "pending",
            table.c.next_attempt_at <= current,
            or_(table.c.lease_until.is_(None), table.c.lease_until <= current),
        )
        .limit(1)
    )
    return (await connection.execute(query)).first() is not None


async def purge_outbound_for(
    connection: AsyncConnection, tenant_id: str, conversation_id: str
) -> None:
    """Forget an erased customer's addresses and texts; what is still queued is dropped."""
    await connection.execute(
        OUTBOUND_DELIVERIES.update()
        .where(
            OUTBOUND_DELIVERIES.c.tenant_id == tenant_id,
            OUTBOUND_DELIVERIES.c.conversation_id == conversation_id,
        )
        .values(recipient=None, content=None, email_headers={}, cause={"erased": True})
    )
    await connection.execute(
        OUTBOUND_DELIVERIES.update()
        .where(
            OUTBOUND_DELIVERIES.c.tenant_id == tenant_id,
            OUTBOUND_DELIVERIES.c.conversation_id == conversation_id,
            OUTBOUND_DELIVERIES.c.status == "pending",
        )
        .values(status="erased")
    )
    await connection.execute(
        OUTBOUND_THREADS.update()
        .where(
            OUTBOUND_THREADS.c.tenant_id == tenant_id,
            OUTBOUND_THREADS.c.conversation_id == conversation_id,
        )
        .values(customer=None, email_message_ids=[], subject=None)
    )


def retry_policy_of(channel: ChannelConfig | None) -> RetryPolicy:
    """The channel's retry settings (`delivery_max_attempts`, `delivery_backoff_seconds`,
    `delivery_backoff_cap_seconds`), defaulting to 5 attempts from 2 s doubling to 5 min."""
    settings = channel.settings if channel is not None else {}
    default = RetryPolicy()
    try:
        return RetryPolicy(
            max_attempts=max(1, int(settings.get("delivery_max_attempts", default.max_attempts))),
            base_seconds=float(settings.get("delivery_backoff_seconds", default.base_seconds)),
            cap_seconds=float(settings.get("delivery_backoff_cap_seconds", default.cap_seconds)),
        )
    except (TypeError, ValueError):
        return default


# --- providers ----------------------------------------------------------------------------


class ChannelMisconfiguredError(Exception):
    """The channel lacks a setting or secret its provider needs (a permanent failure)."""


def _setting(channel: ChannelConfig, *names: str) -> str:
    for name in names:
        value = channel.settings.get(name)
        if value:
            return str(value)
    raise ChannelMisconfiguredError(f"channel {channel.id!r} has no setting {names[0]!r}")


def _secret(channel: ChannelConfig, name: str) -> str:
    try:
        return channel.secret(name)
    except KeyError as error:
        raise ChannelMisconfiguredError(str(error)) from None


async def send_message(
    client: httpx.AsyncClient, channel: ChannelConfig, delivery: dict[str, Any]
) -> DeliveryOutcome:
    """Send one queued message through its channel's provider; never raises."""
    try:
        return await _send(client, channel, delivery)
    except ChannelMisconfiguredError as error:
        return DeliveryOutcome.failed("channel_misconfigured", str(error), retryable=False)
    except (httpx.TimeoutException, httpx.TransportError) as error:
        return DeliveryOutcome.failed("network", f"{type(error).__name__}: {error}", retryable=True)
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as error:
        return _smtp_failure(error)


def sends_natively(channel: ChannelConfig) -> bool:
    """Whether ingest itself sends on this channel; others need a channel adapter's `send`."""
    return channel.type.value in ("web_chat", "api", "sms", "whatsapp", "email")


async def _send(
    client: httpx.AsyncClient, channel: ChannelConfig, delivery: dict[str, Any]
) -> DeliveryOutcome:
    kind = channel.type.value
    provider = (channel.provider or "").lower()
    if kind in ("web_chat", "api"):
        return DeliveryOutcome.sent(delivery["message_id"])
    if kind == "sms" or (kind == "whatsapp" and provider == "twilio"):
        return await _send_twilio(client, channel, delivery, whatsapp=kind == "whatsapp")
    if kind == "whatsapp":
        return await _send_whatsapp_cloud(client, channel, delivery)
    if kind == "email":
        return await _send_email(channel, delivery)
    return DeliveryOutcome.failed(
        "unsupported_channel",
        f"ConvoHub does not send messages on {kind} channels",
        retryable=False,
    )


def _text_of(delivery: dict[str, Any]) -> str:
    content = delivery.get("content") or {}
    text = content.get("text") or ""
    urls = [attachment["url"] for attachment in content.get("attachments", [])]
    return "\n".join([text, *urls]).strip()


async def _send_twilio(
    client: httpx.AsyncClient, channel: ChannelConfig, delivery: dict[str, Any], *, whatsapp: bool
) -> DeliveryOutcome:
    base = str(channel.settings.get("api_base_url") or TWILIO_BASE_URL).rstrip("/")
    account_sid = _setting(channel, "account_sid")
    token = _secret(channel, "auth_token")
    to = delivery["recipient"]["address"]
    form: dict[str, str] = {
        "To": f"whatsapp:{to}" if whatsapp and not to.startswith("whatsapp:") else to,
        "Body": _text_of(delivery),
    }
    if channel.settings.get("messaging_service_sid"):
        form["MessagingServiceSid"] = str(channel.settings["messaging_service_sid"])
    else:
        sender = _setting(channel, "from_number", "phone_number", "from")
        form["From"] = (
            f"whatsapp:{sender}" if whatsapp and not sender.startswith("whatsapp:") else sender
        )
    if channel.settings.get("status_callback_url"):
        form["StatusCallback"] = str(channel.settings["status_callback_url"])
    response = await client.post(
        f"{base}/2010-04-01/Accounts/{account_sid}/Messages.json",
        data=form,
        auth=(account_sid, token),
    )
    body = _json(response)
    if response.is_success and body.get("sid"):
        return DeliveryOutcome.sent(str(body["sid"]))
    code = str(body.get("code") or response.status_code)
    message = str(body.get("message") or response.reason_phrase)
    return DeliveryOutcome.failed(
        code, message, retryable=http_status_is_retryable(response.status_code)
    )


async def _send_whatsapp_cloud(
    client: httpx.AsyncClient, channel: ChannelConfig, delivery: dict[str, Any]
) -> DeliveryOutcome:
    base = str(channel.settings.get("api_base_url") or WHATSAPP_BASE_URL).rstrip("/")
    version = str(channel.settings.get("api_version") or WHATSAPP_API_VERSION)
    phone_number_id = _setting(channel, "phone_number_id")
    token = _secret(channel, "access_token")
    body = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": delivery["recipient"]["address"].lstrip("+"),
        "type": "text",
        "text": {"preview_url": False, "body": _text_of(delivery)},
    }
    response = await client.post(
        f"{base}/{version}/{phone_number_id}/messages",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    answer = _json(response)
    messages = answer.get("messages") or []
    if response.is_success and messages and messages[0].get("id"):
        return DeliveryOutcome.sent(str(messages[0]["id"]))
    error = answer.get("error") or {}
    code = str(error.get("code") or response.status_code)
    message = str(error.get("message") or response.reason_phrase)
    return DeliveryOutcome.failed(
        code, message, retryable=http_status_is_retryable(response.status_code)
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


async def _send_email(channel: ChannelConfig, delivery: dict[str, Any]) -> DeliveryOutcome:
    settings = channel.settings
    sender = _setting(channel, "from_address", "address")
    domain = sender.rpartition("@")[2] or "convohub.local"
    message = EmailMessage()
    message["From"] = sender
    message["To"] = delivery["recipient"]["address"]
    content = delivery.get("content") or {}
    headers = delivery.get("email_headers") or {}
    message["Subject"] = content.get("subject") or reply_subject(headers.get("subject"))
    message_id = email.utils.make_msgid(domain=domain)
    message["Message-ID"] = message_id
    message["Date"] = email.utils.formatdate(localtime=False)
    for name, value in email_thread_headers(headers.get("message_ids", [])).items():
        message[name] = value
    message.set_content(_text_of(delivery))
    password = channel.secrets.get("smtp_password")
    await aiosmtplib.send(
        message,
        hostname=_setting(channel, "smtp_host"),
        port=int(settings.get("smtp_port", 587)),
        username=settings.get("smtp_username"),
        password=password.get_secret_value() if password is not None else None,
        use_tls=bool(settings.get("smtp_tls", False)),
        start_tls=settings.get("smtp_starttls"),
        timeout=float(settings.get("smtp_timeout_seconds", 30)),
    )
    return DeliveryOutcome.sent(message_id)


def _smtp_failure(error: BaseException) -> DeliveryOutcome:
    code = getattr(error, "code", None)
    if isinstance(code, int) and 500 <= code < 600:
        return DeliveryOutcome.failed(
            str(code), str(getattr(error, "message", error)), retryable=False
        )
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        refusals = [getattr(item, "code", 0) for item in error.recipients]
        if refusals and all(500 <= value < 600 for value in refusals):
            return DeliveryOutcome.failed(str(refusals[0]), "recipient refused", retryable=False)
    return DeliveryOutcome.failed(
        str(code) if code else "smtp_unavailable",
        f"{type(error).__name__}: {error}",
        retryable=True,
    )
