"""The service host and the shared HTTP layer, with a small service built for the test:
its projection counts messages per tenant, its route serves the count behind an API key,
and its background loop records that it ran. Runs on the embedded log and on Kafka."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Column, Integer, MetaData, String, Table, select

from convohub.contracts.topics import CONVERSATION
from convohub.runtime.app import create_service_app
from convohub.runtime.config import ConfigError, parse_config, tenant_sections
from convohub.runtime.http import Admin, AnyRole, Problem
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.service import Service, ServiceHost
from convohub.runtime.store import UnitOfWork
from tests.scenarios.projections import message
from tests.support.hub import BACKENDS, backend_for, eventually, running_hub

METADATA = MetaData()
COUNTS = Table(
    "counter_messages",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("messages", Integer, nullable=False),
)
AGENT_KEY = "agent-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
OTHER_KEY = "other-key-0123456789"
CONFIG = parse_config(
    f"""
tenants:
  - id: acme
    name: Acme
    api_keys:
      - {{key: {AGENT_KEY}, role: agent}}
      - {{key: {ADMIN_KEY}, role: admin}}
    feedback: {{greeting: hello}}
  - id: globex
    name: Globex
    api_keys:
      - {{key: {OTHER_KEY}, role: admin}}
""",
    {},
)


class CountingProjection(Projection):
    name = "counter.messages"
    topics = (CONVERSATION.name,)
    metadata = METADATA

    async def apply(self, events: Sequence[ConsumedEvent], uow: UnitOfWork) -> None:
        for consumed in events:
            tenant = consumed.event.tenantid
            connection = uow.connection
            current = await connection.scalar(
                select(COUNTS.c.messages).where(COUNTS.c.tenant_id == tenant)
            )
            if current is None:
                await connection.execute(COUNTS.insert().values(tenant_id=tenant, messages=1))
            else:
                await connection.execute(
                    COUNTS.update().where(COUNTS.c.tenant_id == tenant).values(messages=current + 1)
                )


class CounterService(Service):
    name = "counter"
    metadata = METADATA

    def __init__(self) -> None:
        self.loop_runs = 0

    def projections(self) -> Sequence[Projection]:
        return (CountingProjection(),)

    def background(self) -> Sequence[Any]:
        async def loop() -> None:
            while True:
                self.loop_runs += 1
                await asyncio.sleep(0.01)

        return (loop,)

    def routes(self) -> APIRouter:
        router = APIRouter()

        @router.get("/v1/counter")
        async def count(principal: AnyRole) -> dict[str, Any]:
            async with self.context.store.engine.connect() as connection:
                value = await connection.scalar(
                    select(COUNTS.c.messages).where(COUNTS.c.tenant_id == principal.tenant_id)
                )
            return {"tenant": principal.tenant_id, "messages": value or 0}

        @router.post("/v1/counter/reset")
        async def reset(_: Admin) -> dict[str, str]:
            raise Problem(409, "not_supported", "counters cannot be reset")

        return router


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with backend_for(request.param, request, tmp_path) as backend:
        yield backend


async def test_a_service_projects_serves_and_runs_its_loops(backend: Any) -> None:
    service = CounterService()
    async with running_hub(backend, [service], CONFIG) as hub:
        await hub.publish(*(message(f"c{n}", 0) for n in range(3)))
        await hub.publish(message("g1", 0, tenant="globex"))

        async def count_of(key: str, expected: int) -> Any:
            response = await hub.client.get("/v1/counter", headers=hub.auth(key))
            return response.json()["messages"] == expected and response.json()

        mine = await eventually(lambda: count_of(AGENT_KEY, 3), "acme's three messages")
        theirs = await eventually(lambda: count_of(OTHER_KEY, 1), "globex's one message")
        assert mine == {"tenant": "acme", "messages": 3}
        assert theirs == {"tenant": "globex", "messages": 1}
        assert service.loop_runs > 0
        ready = await hub.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["counter.database"] == "ok"


@pytest.mark.parametrize("freeze_heap", [True, False])
async def test_a_server_app_freezes_what_start_up_made(
    freeze_heap: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`convohub up` and `serve` keep start-up's long-lived objects out of the garbage
    collector's full passes; an app made for a test leaves the collector alone."""
    async with backend_for("embedded", request, tmp_path) as backend:
        host = ServiceHost(
            [CounterService()], config=CONFIG, bus=await backend.bus(), open_store=backend.store
        )
        app = create_service_app(host, manage_bus=False, freeze_heap=freeze_heap)
        gc.unfreeze()
        try:
            async with app.router.lifespan_context(app):
                frozen = gc.get_freeze_count()
        finally:
            gc.unfreeze()
    assert (frozen > 0) is freeze_heap


async def test_errors_are_problem_documents(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async with (
        backend_for("embedded", request, tmp_path) as backend,
        running_hub(backend, [CounterService()], CONFIG) as hub,
    ):
        anonymous = await hub.client.get("/v1/counter")
        unknown = await hub.client.get("/v1/counter", headers=hub.auth("x" * 20))
        too_low = await hub.client.post("/v1/counter/reset", headers=hub.auth(AGENT_KEY))
        refused = await hub.client.post("/v1/counter/reset", headers=hub.auth(ADMIN_KEY))
        missing = await hub.client.get("/v1/nothing-here")

    for response, status, code in [
        (anonymous, 401, "unauthenticated"),
        (unknown, 401, "unauthenticated"),
        (too_low, 403, "forbidden"),
        (refused, 409, "not_supported"),
        (missing, 404, "not_found"),
    ]:
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == code
        assert response.json()["status"] == status


class Greeting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = "hi"
    repeat: int = 1


def test_tenant_sections_validate_with_the_services_model_and_full_key_paths() -> None:
    sections = tenant_sections(CONFIG, "feedback", Greeting)
    assert sections == {"acme": Greeting(greeting="hello"), "globex": Greeting()}

    wrong = parse_config(
        """
tenants:
  - {id: a, name: A}
  - id: b
    name: B
    feedback: {greting: hello, repeat: many}
""",
        {},
    )
    with pytest.raises(ConfigError) as caught:
        tenant_sections(wrong, "feedback", Greeting)
    problems = {problem.path: problem.reason for problem in caught.value.problems}
    assert set(problems) == {"tenants[1].feedback.greting", "tenants[1].feedback.repeat"}
    assert "did you mean 'greeting'" in problems["tenants[1].feedback.greting"]
