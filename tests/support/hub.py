"""Run services on a test backend (the embedded log with SQLite, or real Kafka with
PostgreSQL) and talk to them as a user would: over HTTP and through the log.

    @pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.integration)])
    async def backend(request, tmp_path): ...   # see `backend_for`

    async with running_hub(backend, [create_service(config)], config) as hub:
        response = await hub.client.post("/v1/...", headers=hub.auth(KEY))
        await hub.publish(event)
        facts = await hub.wait_for_events(ROUTING.name, lambda e: e.type == "...")
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from convohub.contracts import Envelope, from_kafka_record
from convohub.runtime.app import create_service_app
from convohub.runtime.bus.port import EventBus
from convohub.runtime.config import HubConfig
from convohub.runtime.service import Clock, Service, ServiceHost
from convohub.runtime.telemetry import Telemetry
from tests.scenarios.backends import Backend, EmbeddedBackend, KafkaPostgresBackend

__all__ = ["RunningHub", "backend_for", "eventually", "running_hub"]

BACKENDS = ["embedded", pytest.param("kafka", marks=pytest.mark.integration)]
"""Parametrise a `backend` fixture with this to run a test in both modes."""


async def eventually(
    check: Callable[[], Awaitable[Any]], what: str, within: float = 30.0, every: float = 0.05
) -> Any:
    """Wait until `check()` returns something truthy (and return it); fail naming `what`."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {within}s waiting for: {what}")
        await asyncio.sleep(every)


@asynccontextmanager
async def backend_for(
    kind: str, request: pytest.FixtureRequest, tmp_path: Any
) -> AsyncIterator[Backend]:
    """A backend of `kind` (`embedded` or `kafka`); Kafka's needs the session servers."""
    if kind == "embedded":
        backend: Backend = EmbeddedBackend(tmp_path)
    else:
        backend = KafkaPostgresBackend(
            request.getfixturevalue("kafka_bootstrap_servers"),
            request.getfixturevalue("database_url"),
        )
    try:
        yield backend
    finally:
        await backend.close()


@dataclass
class RunningHub:
    """Started services, an HTTP client on their app, and the log they share."""

    host: ServiceHost
    bus: EventBus
    client: httpx.AsyncClient

    @staticmethod
    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def publish(self, *events: Envelope[Any]) -> None:
        await self.bus.publish_events(list(events))

    async def events(self, topic: str) -> list[Envelope[Any]]:
        """Every event on `topic` so far, partition by partition, in log order (tombstones,
        records with a null value, are left out)."""
        found: list[Envelope[Any]] = []
        for partition in range(await self.bus.partitions(topic)):
            offset = 0
            while True:
                records = await self.bus.read(topic, partition, offset)
                if not records:
                    break
                found.extend(
                    from_kafka_record(record.value, record.headers)
                    for record in records
                    if record.value is not None  # a tombstone (compacted topics) is no event
                )
                offset = records[-1].offset + 1
        return found

    async def wait_for_events(
        self,
        topic: str,
        match: Callable[[Envelope[Any]], bool],
        *,
        count: int = 1,
        within: float = 30.0,
    ) -> list[Envelope[Any]]:
        """Wait until at least `count` events on `topic` satisfy `match`; returns them all."""

        async def matching() -> list[Envelope[Any]] | None:
            found = [event for event in await self.events(topic) if match(event)]
            return found if len(found) >= count else None

        return await eventually(matching, f"{count} matching event(s) on {topic}", within)


@asynccontextmanager
async def running_hub(
    backend: Backend,
    services: Sequence[Service],
    config: HubConfig,
    *,
    clock: Clock | None = None,
    telemetry: Telemetry | None = None,
) -> AsyncIterator[RunningHub]:
    """Start `services` on `backend` (each with its own store) and serve them over ASGI.

    With `telemetry` (say `build_telemetry(settings, span_processors=[...])`) spans of the
    HTTP requests and consumed events go to its providers."""
    bus = await backend.bus()
    host = ServiceHost(
        services,
        config=config,
        bus=bus,
        open_store=backend.store,
        clock=clock,
        restart_delay=0.1,
        telemetry=telemetry,
    )
    app = create_service_app(host, manage_bus=False)
    await host.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield RunningHub(host=host, bus=bus, client=client)
    finally:
        await host.stop()
