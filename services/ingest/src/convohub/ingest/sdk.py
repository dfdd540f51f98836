"""The channel adapter SDK: how a package adds a channel to ConvoHub without changing it.

A channel adapter is a `ChannelAdapter` subclass that knows one provider's webhook format:

- `verify(request, channel)` checks the provider's signature with the channel's secrets
  (raise `SignatureMissing` → 401, `SignatureInvalid` → 403);
- `parse(request, channel)` turns the verified request into the ingest's inbound model
  (`InboundMessage`, `InboundStatus`, `InboundCall`; raise `PayloadError` → 422 naming the
  field);
- `reply(receipts)` shapes the answer the provider expects (JSON 200 by default);
- `send(client, channel, message)` sends an agent's reply through the provider.

Ingest does the rest, identically for every adapter: the channel lookup (404), the body
limit (413), the rate limit (429), the dedupe claim (a provider message id is accepted
once), conversation placement, the contract events, and the 2xx only after the event log
acknowledged.

Register the adapter under the `convohub.channels` entry-point group; the entry point's
name is the `provider:` a channel names in convohub.yaml, and the webhook URL is
`POST /v1/webhooks/{name}/{channel_id}`:

    [project.entry-points."convohub.channels"]
    line = "acme_line_channel:LineAdapter"

See docs/channels.md for a walk-through and `convohub.ingest.conformance` for the kit that
proves an adapter's signature check, idempotency and events.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl

from convohub.contracts.events.common import Attachment, Channel, Location, MessageContent
from convohub.ingest.domain.desk import DeliveryOutcome
from convohub.ingest.domain.identifiers import (
    InvalidIdentifierError,
    email_key,
    external_key,
    normalise_email,
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
from convohub.ingest.domain.settings import ChannelSettings

if TYPE_CHECKING:
    import httpx

    from convohub.runtime.config import ChannelConfig

__all__ = [
    "ENTRY_POINT_GROUP",
    "AdapterChannel",
    "AdapterRegistry",
    "Attachment",
    "CallPhase",
    "Channel",
    "ChannelAdapter",
    "Customer",
    "DeliveryOutcome",
    "Inbound",
    "InboundCall",
    "InboundMessage",
    "InboundStatus",
    "InvalidIdentifierError",
    "Location",
    "MessageContent",
    "OutboundMessage",
    "PayloadError",
    "Receipt",
    "RequestRejected",
    "SignatureInvalid",
    "SignatureMissing",
    "StatusKind",
    "WebhookReply",
    "WebhookRequest",
    "adapter_channel",
    "email_key",
    "external_key",
    "load_adapters",
    "normalise_email",
    "normalise_phone",
    "phone_key",
]

ENTRY_POINT_GROUP = "convohub.channels"

Inbound = InboundMessage | InboundStatus | InboundCall
"""What `parse` returns items of: a customer message, a delivery status, a call phase."""


class RequestRejected(Exception):
    """Refuse the request with `status` (4xx) and a stable `code`; ingest answers it as an
    RFC 9457 problem."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class SignatureMissing(RequestRejected):
    """The request carries no signature: 401."""

    status = 401
    code = "missing_signature"


class SignatureInvalid(RequestRejected):
    """The signature does not match (or is stale): 403."""

    status = 403
    code = "invalid_signature"


@dataclass(frozen=True)
class WebhookRequest:
    """One provider request as it arrived: framework-free, so adapters and their tests need
    no web server. `url` is the URL the provider called (the channel's `public_base_url`
    applied when a proxy stands in between); header names are lower case."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    query: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def param(self, name: str) -> str | None:
        """The first query parameter of that name, if any."""
        return next((value for key, value in self.query if key == name), None)

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case ('' when absent)."""
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    def json(self) -> Any:
        """The body as JSON (400 when it is not)."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise RequestRejected("the body is not JSON") from None

    def form(self) -> list[tuple[str, str]]:
        """Fields of an urlencoded or multipart body, in order (file parts are skipped)."""
        content_type = self.header("content-type") or ""
        if content_type.startswith("multipart/form-data"):
            document = message_from_bytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + self.body, policy=policy.HTTP
            )
            if not document.is_multipart():
                raise RequestRejected("the multipart body cannot be read")
            fields = []
            for part in document.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if not isinstance(name, str) or part.get_filename():
                    continue  # attachments are metadata only; their bytes are not kept
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    fields.append((name, payload.decode("utf-8", "replace")))
            return fields
        if content_type and not content_type.startswith("application/x-www-form-urlencoded"):
            raise RequestRejected(
                "send application/x-www-form-urlencoded",
                status=415,
                code="unsupported_media_type",
            )
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestRejected("the form is not UTF-8") from None
        return parse_qsl(text, keep_blank_values=True)


@dataclass(frozen=True)
class AdapterChannel:
    """The configured channel a request arrived on, as an adapter sees it."""

    tenant_id: str
    channel_id: str
    type: Channel
    provider: str | None
    settings: ChannelSettings
    """Ingest's settings of the channel; the adapter's own keys are in `options`."""
    options: Mapping[str, Any]
    secrets: Mapping[str, str] = field(repr=False)
    now: datetime

    def secret(self, name: str) -> str:
        """One secret's plain value (403 `channel_not_configured` when it is missing: a
        channel without its secret cannot verify anything)."""
        try:
            return self.secrets[name]
        except KeyError:
            raise RequestRejected(
                f"channel {self.channel_id!r} has no secret {name!r}",
                status=403,
                code="channel_not_configured",
            ) from None


def adapter_channel(
    tenant_id: str, config: ChannelConfig, settings: ChannelSettings, now: datetime
) -> AdapterChannel:
    """A configured channel as its adapter sees it (for `verify`, `parse` and `send`)."""
    return AdapterChannel(
        tenant_id=tenant_id,
        channel_id=config.id,
        type=config.type,
        provider=config.provider,
        settings=settings,
        options=dict(config.settings),
        secrets={name: value.get_secret_value() for name, value in config.secrets.items()},
        now=now,
    )


@dataclass(frozen=True)
class Receipt:
    """What ingest made of one parsed item: ids (never content) and whether it was a retry
    of an item accepted before."""

    outcome: Mapping[str, Any]
    duplicate: bool


@dataclass(frozen=True)
class WebhookReply:
    """The answer to the provider once every item was acknowledged by the event log."""

    status_code: int = 200
    body: bytes = b'{"status":"accepted"}'
    media_type: str = "application/json"


@dataclass(frozen=True)
class OutboundMessage:
    """An agent's (or bot's) message to send through the channel."""

    message_id: str
    conversation_id: str
    recipient_address: str
    text: str | None
    attachments: tuple[Attachment, ...] = ()


class ChannelAdapter:
    """Base class of a channel adapter; override `verify` and `parse` at least.

    Class attributes:
    - `name`: the entry-point name, the `provider:` of the channels it serves;
    - `channel_types`: the contract channel kinds it speaks (for example `Channel.SOCIAL`);
    - `any_provider`: serve every channel of those kinds whatever its `provider:`
      (the built-in e-mail adapters do; a third-party adapter normally does not);
    - `required_secrets`: checked when the hub starts, so a missing secret is named then;
    - `success_status`: the status `reply` answers with, documented in /openapi.json.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    channel_types: ClassVar[tuple[Channel, ...]] = ()
    any_provider: ClassVar[bool] = False
    required_secrets: ClassVar[tuple[str, ...]] = ()
    success_status: ClassVar[int] = 200

    def serves(self, channel_type: Channel, provider: str | None) -> bool:
        """Whether a channel of that kind and provider is this adapter's."""
        if channel_type not in self.channel_types:
            return False
        return self.any_provider or (provider or "").lower() == self.name

    def verify(self, request: WebhookRequest, channel: AdapterChannel) -> None:
        """Raise `SignatureMissing` or `SignatureInvalid` unless the provider signed it."""
        raise NotImplementedError

    def parse(self, request: WebhookRequest, channel: AdapterChannel) -> Sequence[Inbound]:
        """The verified request's items (an empty list acknowledges a no-op ping)."""
        raise NotImplementedError

    def handshake(self, request: WebhookRequest, channel: AdapterChannel) -> WebhookReply:
        """Answer the provider's GET that proves the webhook URL is the integrator's (Meta's
        `hub.challenge`, for example), or raise `RequestRejected`. Override it only if the
        provider does one: ingest serves `GET /v1/webhooks/{name}/{channel_id}` for an
        adapter whose class overrides this method, and no GET otherwise."""
        raise NotImplementedError

    def reply(self, receipts: Sequence[Receipt]) -> WebhookReply:
        """The answer once every item was acknowledged; JSON `{"status", "items"}`."""
        body = {"status": "accepted", "items": len(receipts)}
        return WebhookReply(self.success_status, json.dumps(body).encode())

    async def send(
        self, client: httpx.AsyncClient, channel: AdapterChannel, message: OutboundMessage
    ) -> DeliveryOutcome:
        """Send `message` through the provider (never raise: return a failed outcome)."""
        return DeliveryOutcome.failed(
            "unsupported_channel", f"adapter {self.name!r} does not send messages", retryable=False
        )


@dataclass(frozen=True)
class AdapterRegistry:
    """The installed adapters by name, and the entry points that failed to load."""

    adapters: Mapping[str, ChannelAdapter]
    errors: Mapping[str, str] = field(default_factory=dict)

    def for_channel(self, channel_type: Channel, provider: str | None) -> ChannelAdapter | None:
        """The adapter named by the channel's provider, else one serving any provider."""
        named = self.adapters.get((provider or "").lower())
        if named is not None and named.serves(channel_type, provider):
            return named
        for adapter in self.adapters.values():
            if adapter.any_provider and adapter.serves(channel_type, provider):
                return adapter
        return None


def load_adapters(group: str = ENTRY_POINT_GROUP) -> AdapterRegistry:
    """Every adapter registered under `group`: an entry point names a `ChannelAdapter`
    subclass (instantiated without arguments) or an instance."""
    adapters: dict[str, ChannelAdapter] = {}
    errors: dict[str, str] = {}
    for point in entry_points(group=group):
        try:
            target = point.load()
            adapter = target() if isinstance(target, type) else target
        except Exception as error:  # a broken third-party package must not stop the hub
            errors[point.name] = f"{type(error).__name__}: {error}"
            continue
        if not isinstance(adapter, ChannelAdapter):
            errors[point.name] = f"{point.value} is not a ChannelAdapter"
            continue
        if adapter.name != point.name:
            errors[point.name] = f"{point.value} is named {adapter.name!r}, not {point.name!r}"
            continue
        adapters[point.name] = adapter
    return AdapterRegistry(adapters, errors)
