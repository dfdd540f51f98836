"""Wires the ingest service's domain, handlers, adapters and routes together.

The service has two sides built by two teams in this package:

- the channel (inbound) side, here: webhooks, web chat, the generic API channel, the
  inbound pipeline (`handlers.inbound`) and the conversation-state projection
  (`handlers.conversations`);
- the desk side: `api.desk.desk_router(service)` (agent commands and the read model),
  `handlers.delivery.desk_projections()` and `desk_background(service)` (read model and
  outbound delivery). Imported here at module level, so their tables are on `METADATA`
  before anything creates them (`convohub migrate` never builds the routes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog
from fastapi import APIRouter
from pydantic import ValidationError

from convohub.contracts.events.common import Channel
from convohub.ingest.adapters.tables import METADATA
from convohub.ingest.api import ChannelEdge, channel_routes
from convohub.ingest.api.desk import desk_router
from convohub.ingest.domain.settings import ChannelSettings
from convohub.ingest.handlers.conversations import ConversationStateProjection
from convohub.ingest.handlers.delivery import desk_background, desk_projections
from convohub.ingest.handlers.inbound import InboundPipeline
from convohub.ingest.sdk import AdapterRegistry, load_adapters
from convohub.runtime.config import ConfigError, ConfigProblem, HubConfig
from convohub.runtime.projection import Projection
from convohub.runtime.service import Service

__all__ = [
    "IngestService",
    "create_service",
    "validate_channel_adapters",
    "validate_channel_settings",
]

log = structlog.get_logger(__name__)

# Channel kinds served by a built-in route whatever the provider says.
_BUILT_IN_KINDS = frozenset(
    {Channel.WEB_CHAT, Channel.SMS, Channel.WHATSAPP, Channel.VOICE, Channel.API}
)


def validate_channel_settings(config: HubConfig) -> dict[tuple[str, str], ChannelSettings]:
    """Every channel's ingest settings, by (tenant id, channel id); ConfigError names the
    key path of each problem (`tenants[0].channels[2].settings.max_body_bytes`)."""
    problems: list[ConfigProblem] = []
    found: dict[tuple[str, str], ChannelSettings] = {}
    for tenant_index, tenant in enumerate(config.tenants):
        for channel_index, channel in enumerate(tenant.channels):
            path = f"tenants[{tenant_index}].channels[{channel_index}].settings"
            try:
                found[(tenant.id, channel.id)] = ChannelSettings.model_validate(channel.settings)
            except ValidationError as error:
                for detail in error.errors(include_url=False):
                    where = ".".join([path, *map(str, detail["loc"])])
                    problems.append(ConfigProblem(where, detail["msg"]))
    if problems:
        raise ConfigError("convohub.yaml", problems)
    return found


def validate_channel_adapters(config: HubConfig, adapters: AdapterRegistry) -> None:
    """ConfigError when a channel's `provider` names an adapter that failed to load, or an
    adapter's channel lacks a secret it requires; a channel no route serves is logged."""
    problems: list[ConfigProblem] = []
    for tenant_index, tenant in enumerate(config.tenants):
        for channel_index, channel in enumerate(tenant.channels):
            path = f"tenants[{tenant_index}].channels[{channel_index}]"
            provider = (channel.provider or "").lower()
            if provider in adapters.errors:
                problems.append(
                    ConfigProblem(
                        f"{path}.provider",
                        f"the channel adapter {provider!r} ({adapters.errors[provider]}) "
                        "did not load",
                    )
                )
                continue
            adapter = adapters.for_channel(channel.type, channel.provider)
            if adapter is None:
                if channel.type not in _BUILT_IN_KINDS:
                    log.warning(
                        "no channel adapter serves this channel; its webhooks answer 404",
                        tenant=tenant.id,
                        channel=channel.id,
                        kind=channel.type.value,
                        provider=channel.provider,
                        installed=sorted(adapters.adapters),
                    )
                continue
            for secret in adapter.required_secrets:
                if secret not in channel.secrets:
                    problems.append(
                        ConfigProblem(
                            f"{path}.secrets.{secret}",
                            f"the {adapter.name!r} channel adapter needs this secret",
                        )
                    )
    if problems:
        raise ConfigError("convohub.yaml", problems)


class IngestService(Service):
    name = "ingest"
    metadata = METADATA

    def __init__(self, config: HubConfig, adapters: AdapterRegistry | None = None) -> None:
        self.config = config
        self.channel_settings = validate_channel_settings(config)
        self.adapters = adapters if adapters is not None else load_adapters()
        validate_channel_adapters(config, self.adapters)
        self.pipeline = InboundPipeline(lambda: self.context)
        self.edge = ChannelEdge(
            config=config,
            settings=self.channel_settings,
            pipeline=self.pipeline,
            context=lambda: self.context,
            adapters=self.adapters,
        )

    def routes(self) -> APIRouter:
        router = APIRouter()
        router.include_router(channel_routes(self.edge))
        router.include_router(desk_router(self))
        return router

    def projections(self) -> Sequence[Projection]:
        return [ConversationStateProjection(), *desk_projections()]

    def background(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return desk_background(self, adapters=self.adapters, channel_settings=self.channel_settings)

    async def on_stop(self) -> None:
        await self.pipeline.drained()  # done marks written after the last answers


def create_service(config: HubConfig, adapters: AdapterRegistry | None = None) -> IngestService:
    """The ingest service for `config` with the installed channel adapters (or `adapters`);
    ConfigError when a channel's settings are wrong."""
    return IngestService(config, adapters)
