"""Wires the crm service's domain, handlers, adapters and routes together."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from convohub.crm.adapters.tables import LEDGER_METADATA, SERVICE_METADATA
from convohub.crm.api import build_router
from convohub.crm.domain.settings import CrmSettings
from convohub.crm.handlers import ConversationProjection
from convohub.runtime.config import HubConfig, tenant_sections
from convohub.runtime.projection import Projection
from convohub.runtime.service import Service


class CrmService(Service):
    """Customers across channels: identities, merges, profiles, segments, timeline, erasure."""

    name = "crm"
    metadata = SERVICE_METADATA

    def __init__(self, settings: dict[str, CrmSettings]) -> None:
        self.settings = settings

    def projections(self) -> Sequence[Projection]:
        return (ConversationProjection(self.settings),)

    def routes(self) -> APIRouter:
        return build_router(lambda: self.context, self.settings)

    async def on_start(self) -> None:
        # The ledger outlives a rebuild of the projection; make sure it exists either way.
        async with self.context.store.begin() as connection:
            await connection.run_sync(LEDGER_METADATA.create_all)


def create_service(config: HubConfig) -> CrmService:
    """The CRM service for `config`; ConfigError names every wrong key of the `crm:` sections."""
    return CrmService(tenant_sections(config, "crm", CrmSettings))
