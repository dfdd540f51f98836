"""HTTP routes of the ingest service.

Channel side: `webhooks` (Twilio, WhatsApp Cloud API), `adapters` (every installed channel
adapter of the SDK: the built-in e-mail and Mailgun ones and third-party packages'),
`webchat` (the site widget's sessions, messages and SSE stream), `channels` (the generic
API channel), sharing `edge` (channel directory, body and rate limits). Desk side: `desk`.
"""

from __future__ import annotations

from fastapi import APIRouter

from convohub.ingest.api.adapters import adapter_routes
from convohub.ingest.api.channels import channels_router
from convohub.ingest.api.edge import ChannelEdge
from convohub.ingest.api.webchat import webchat_router
from convohub.ingest.api.webhooks import webhooks_router

__all__ = ["ChannelEdge", "channel_routes"]


def channel_routes(edge: ChannelEdge) -> APIRouter:
    """Every channel-side route of the service."""
    router = APIRouter()
    router.include_router(webhooks_router(edge))
    router.include_router(adapter_routes(edge))
    router.include_router(webchat_router(edge))
    router.include_router(channels_router(edge))
    return router
