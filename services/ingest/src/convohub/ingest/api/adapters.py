"""Webhooks of the installed channel adapters (`convohub.channels` entry points): one
`POST /v1/webhooks/{name}/{channel_id}` per adapter, the same steps for every one.

The adapter verifies and parses; ingest finds the channel (404 unless it is configured with
a kind and provider the adapter serves), limits body size and rate, runs each parsed item
through the inbound pipeline (dedupe, placement, events, broker ack) and only then answers
with the adapter's reply. An adapter that overrides `handshake` also gets `GET` on the same
path, for the provider's subscription check.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response

from convohub.ingest.api.edge import (
    ChannelEdge,
    EdgeChannel,
    payload_problem,
    read_body,
    rejected_problem,
    signed_urls,
)
from convohub.ingest.domain.inbound import PayloadError
from convohub.ingest.handlers.inbound import Accepted
from convohub.ingest.sdk import (
    ChannelAdapter,
    InboundCall,
    InboundMessage,
    InboundStatus,
    Receipt,
    RequestRejected,
    WebhookRequest,
)
from convohub.runtime.http import Problem

__all__ = ["ADAPTER_FAILED", "BUILT_IN_ROUTES", "adapter_routes"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

ADAPTER_FAILED = "adapter_failed"
"""Problem code when an adapter raised something other than the SDK's errors (a bug the
conformance kit reports: raise `PayloadError` or `SignatureInvalid` instead)."""

BUILT_IN_ROUTES = frozenset({"twilio", "twilio-voice", "whatsapp"})
"""Webhook path names served by the built-in routes, so no adapter may take them."""


def adapter_routes(edge: ChannelEdge) -> APIRouter:
    router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
    for name, adapter in sorted(edge.adapters.adapters.items()):
        if name in BUILT_IN_ROUTES:
            continue
        router.add_api_route(
            f"/{name}/{{channel_id}}",
            _endpoint(edge, adapter),
            methods=["POST"],
            name=f"adapter_webhook_{name}",
            summary=adapter.summary or f"{name} webhook (channel adapter)",
            status_code=adapter.success_status,
            response_class=Response,
            responses={
                adapter.success_status: {"description": "Accepted: every item is on the log"}
            },
        )
        if type(adapter).handshake is not ChannelAdapter.handshake:
            router.add_api_route(
                f"/{name}/{{channel_id}}",
                _handshake_endpoint(edge, adapter),
                methods=["GET"],
                name=f"adapter_handshake_{name}",
                summary=f"{name} webhook verification (the provider's subscription handshake)",
                response_class=Response,
                responses={200: {"description": "The provider's challenge, answered"}},
            )
    return router


def _handshake_endpoint(
    edge: ChannelEdge, adapter: ChannelAdapter
) -> Callable[[str, Request], Coroutine[Any, Any, Response]]:
    async def handshake(channel_id: str, request: Request) -> Response:
        channel = _channel(edge, adapter, channel_id)
        edge.limit(channel, "webhook")
        webhook = _webhook_request(request, channel, b"")
        view = channel.for_adapter(edge.context().clock.now())
        reply = _guarded(
            adapter, "answer a handshake", 403, lambda: adapter.handshake(webhook, view)
        )
        return Response(reply.body, status_code=reply.status_code, media_type=reply.media_type)

    handshake.__name__ = f"adapter_handshake_{adapter.name.replace('-', '_')}"
    return handshake


def _endpoint(
    edge: ChannelEdge, adapter: ChannelAdapter
) -> Callable[[str, Request], Coroutine[Any, Any, Response]]:
    async def receive(channel_id: str, request: Request) -> Response:
        channel = _channel(edge, adapter, channel_id)
        edge.limit(channel, "webhook")
        body = await read_body(request, channel.settings.max_body_bytes)
        webhook = _webhook_request(request, channel, body)
        view = channel.for_adapter(edge.context().clock.now())
        # An adapter that crashes on what a caller sent must not answer 500 (nor let the
        # request through): the request is refused as unverifiable or unreadable, the bug
        # logged.
        _guarded(adapter, "verify", 403, lambda: adapter.verify(webhook, view))
        items = _guarded(adapter, "parse", 422, lambda: list(adapter.parse(webhook, view)))
        receipts = []
        for item in items:
            accepted = await edge.run(_accept(edge, channel, adapter, item))
            receipts.append(Receipt(outcome=accepted.outcome, duplicate=accepted.duplicate))
        reply = adapter.reply(receipts)
        return Response(reply.body, status_code=reply.status_code, media_type=reply.media_type)

    receive.__name__ = f"adapter_webhook_{adapter.name.replace('-', '_')}"
    return receive


def _webhook_request(request: Request, channel: EdgeChannel, body: bytes) -> WebhookRequest:
    return WebhookRequest(
        method=request.method,
        url=signed_urls(request, channel.settings)[0],
        headers={name.lower(): value for name, value in request.headers.items()},
        body=body,
        query=tuple(request.query_params.multi_items()),
    )


_FAILED_STEP = {
    "verify": "the request could not be verified",
    "parse": "the request's payload could not be read",
    "answer a handshake": "the handshake could not be answered",
}


def _guarded(adapter: ChannelAdapter, step: str, status: int, call: Callable[[], T]) -> T:
    """`call()` (one of the adapter's steps); the SDK's errors become their problems, any
    other exception a logged `adapter_failed` problem with `status`."""
    try:
        return call()
    except RequestRejected as error:
        raise rejected_problem(error) from None
    except PayloadError as error:
        raise payload_problem(error) from None
    except Exception:
        log.exception(f"channel adapter failed to {step}", adapter=adapter.name)
        raise Problem(status, ADAPTER_FAILED, _FAILED_STEP[step], adapter=adapter.name) from None


def _channel(edge: ChannelEdge, adapter: ChannelAdapter, channel_id: str) -> EdgeChannel:
    channel = edge.channel(channel_id, adapter.channel_types)
    if not adapter.serves(channel.config.type, channel.config.provider):
        raise Problem(404, "unknown_channel", f"no such channel: {channel_id!r}")
    return channel


def _accept(
    edge: ChannelEdge, channel: EdgeChannel, adapter: ChannelAdapter, item: Any
) -> Coroutine[Any, Any, Accepted]:
    tenant_id = channel.tenant.id
    if isinstance(item, InboundMessage):
        _same_channel(adapter, channel, item.customer.channel_id)
        return edge.pipeline.message(
            tenant_id, item, human_keywords=channel.settings.human_request_keywords
        )
    if isinstance(item, InboundStatus):
        return edge.pipeline.status(tenant_id, channel.id, item)
    if isinstance(item, InboundCall):
        _same_channel(adapter, channel, item.customer.channel_id)
        return edge.pipeline.call(tenant_id, item)
    raise TypeError(f"adapter {adapter.name!r} parsed a {type(item).__name__}, not an Inbound")


def _same_channel(adapter: ChannelAdapter, channel: EdgeChannel, channel_id: str) -> None:
    if channel_id != channel.id:  # an adapter bug, not bad input: refuse to mis-file it
        raise TypeError(
            f"adapter {adapter.name!r} attributed an item to channel {channel_id!r}, "
            f"not {channel.id!r}"
        )
