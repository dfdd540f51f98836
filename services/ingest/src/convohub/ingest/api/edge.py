"""What the channel routes share: the channel directory, body limits, rate limits, and
the mapping of pipeline outcomes to HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import Request

from convohub.contracts.events.common import Channel
from convohub.ingest.domain.inbound import PayloadError
from convohub.ingest.domain.rate_limit import RateLimiter
from convohub.ingest.domain.settings import ChannelSettings
from convohub.ingest.handlers.inbound import (
    Accepted,
    BusUnavailableError,
    ClaimBusyError,
    InboundPipeline,
)
from convohub.ingest.sdk import (
    AdapterChannel,
    AdapterRegistry,
    RequestRejected,
    WebhookRequest,
    adapter_channel,
)
from convohub.runtime.config import ChannelConfig, HubConfig, Tenant
from convohub.runtime.http import Problem
from convohub.runtime.service import ServiceContext

__all__ = ["ChannelEdge", "EdgeChannel", "payload_problem", "rejected_problem", "signed_urls"]


@dataclass(frozen=True)
class EdgeChannel:
    tenant: Tenant
    config: ChannelConfig
    settings: ChannelSettings

    @property
    def id(self) -> str:
        return self.config.id

    def secret(self, name: str) -> str:
        try:
            return self.config.secret(name)
        except KeyError:
            # A misconfigured channel cannot verify anything: refuse, naming the secret.
            raise Problem(
                403, "channel_not_configured", f"channel {self.id!r} has no secret {name!r}"
            ) from None

    def for_adapter(self, now: Any) -> AdapterChannel:
        """The channel as a channel adapter (`convohub.ingest.sdk`) sees it."""
        return adapter_channel(self.tenant.id, self.config, self.settings, now)


@dataclass
class ChannelEdge:
    """Everything the channel routes need, built once by the service."""

    config: HubConfig
    settings: dict[tuple[str, str], ChannelSettings]
    pipeline: InboundPipeline
    context: Callable[[], ServiceContext]
    adapters: AdapterRegistry = field(default_factory=lambda: AdapterRegistry({}))
    limiter: RateLimiter = field(default_factory=RateLimiter)
    monotonic: Callable[[], float] = time.monotonic

    def channel(
        self,
        channel_id: str,
        kinds: Iterable[Channel],
        *,
        tenant: Tenant | None = None,
        providers: Iterable[str | None] | None = None,
    ) -> EdgeChannel:
        """The channel a URL names (404 when no tenant, or several, has it with that kind)."""
        kinds = set(kinds)
        allowed = set(providers) if providers is not None else None
        tenants = [tenant] if tenant is not None else list(self.config.tenants)
        found = [
            (owner, channel)
            for owner in tenants
            for channel in owner.channels
            if channel.id == channel_id
            and channel.type in kinds
            and (allowed is None or channel.provider in allowed)
        ]
        if len(found) != 1:
            raise Problem(404, "unknown_channel", f"no such channel: {channel_id!r}")
        owner, channel = found[0]
        return EdgeChannel(owner, channel, self.settings[(owner.id, channel.id)])

    def limit(self, channel: EdgeChannel, caller: str) -> None:
        """429 with Retry-After when `caller` on `channel` is over its token bucket."""
        wait = self.limiter.take(
            (channel.tenant.id, channel.id, caller),
            channel.settings.rate_per_second,
            channel.settings.rate_burst,
            self.monotonic(),
        )
        if wait > 0:
            seconds = max(1, int(wait + 0.999))
            raise Problem(
                429,
                "rate_limited",
                f"too many requests on channel {channel.id!r}; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
                retry_after=seconds,
            )

    async def run(self, step: Any) -> Accepted:
        """Await a pipeline step, answering 503 (retry) when the claim or the bus is busy."""
        try:
            return await step
        except ClaimBusyError:
            raise Problem(
                503,
                "in_progress",
                "the same message is being processed; retry",
                headers={"Retry-After": "1"},
            ) from None
        except BusUnavailableError:
            raise Problem(
                503,
                "bus_unavailable",
                "the event log did not acknowledge; retry",
                headers={"Retry-After": "1"},
            ) from None


def payload_problem(error: PayloadError) -> Problem:
    return Problem(
        422,
        "invalid_payload",
        f"invalid: {error.field}: {error.detail}",
        errors=[{"field": error.field, "message": error.detail}],
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing with 413 anything over `limit` bytes (before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise Problem(400, "bad_request", "Content-Length is not a number") from None
        if too_big:
            raise Problem(413, "body_too_large", f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "body_too_large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_form(request: Request, body: bytes) -> list[tuple[str, str]]:
    """Form fields of an urlencoded or multipart body (files: their text, if any)."""
    webhook = WebhookRequest(
        request.method,
        str(request.url),
        {"content-type": request.headers.get("content-type", "")},
        body,
    )
    try:
        return webhook.form()
    except RequestRejected as error:
        raise rejected_problem(error) from None


def rejected_problem(error: RequestRejected) -> Problem:
    return Problem(error.status, error.code, error.detail)


def signed_urls(request: Request, settings: ChannelSettings) -> list[str]:
    """The URL a provider signed: the configured public base URL behind a proxy, else the
    request's; with and without an explicit default port, as providers may use either."""
    url = str(request.url)
    if settings.public_base_url:
        path_and_query = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        url = settings.public_base_url.rstrip("/") + path_and_query
    parts = urlsplit(url)
    candidates = [url]
    default_port = {"https": 443, "http": 80}.get(parts.scheme)
    if parts.port is None and default_port and parts.hostname:
        candidates.append(urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default_port}")))
    elif parts.port == default_port and parts.hostname:
        netloc = parts.netloc.rsplit(":", 1)[0]
        candidates.append(urlunsplit(parts._replace(netloc=netloc)))
    return candidates
