"""Wires the feedback service's domain, handlers, adapters and routes together."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog
from fastapi import APIRouter

from convohub.feedback.adapters import repository
from convohub.feedback.adapters.tables import METADATA
from convohub.feedback.api import build_router
from convohub.feedback.domain.settings import ServiceFeedback, TenantFeedback
from convohub.feedback.handlers import ConversationFeedback, expire_surveys, send_due_surveys
from convohub.runtime.config import HubConfig, service_section, tenant_sections
from convohub.runtime.projection import Projection
from convohub.runtime.service import Service

log = structlog.get_logger(__name__)


class FeedbackService(Service):
    name = "feedback"
    metadata = METADATA

    def __init__(self, config: HubConfig) -> None:
        self.settings: dict[str, TenantFeedback] = tenant_sections(
            config, "feedback", TenantFeedback
        )
        self.service_settings = service_section(config, "feedback", ServiceFeedback)
        configured = self.service_settings.link_secret
        self._link_secret: bytes | None = (
            configured.get_secret_value().encode() if configured else None
        )

    def link_secret(self) -> bytes:
        if self._link_secret is None:
            raise RuntimeError("the feedback service has not started yet")
        return self._link_secret

    async def on_start(self) -> None:
        if self._link_secret is None:
            async with self.context.store.begin() as connection:
                self._link_secret = (await repository.link_secret(connection)).encode()

    def projections(self) -> Sequence[Projection]:
        return (ConversationFeedback(self.settings),)

    def routes(self) -> APIRouter:
        return build_router(lambda: self.context, self.settings, self.link_secret)

    def background(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return (self._survey_loop,)

    async def _survey_loop(self) -> None:
        while True:
            now = self.context.clock.now()
            sent = await send_due_surveys(self.context.store, now)
            expired = await expire_surveys(self.context.store, now)
            if sent or expired:
                log.info("surveys", sent=sent, expired=expired)
            await asyncio.sleep(self.service_settings.poll_interval_seconds)


def create_service(config: HubConfig) -> Service:
    """The feedback service; raises ConfigError when a `feedback:` section is invalid."""
    return FeedbackService(config)
