"""The two backends every delivery scenario runs on: the embedded log with SQLite, and a
real Apache Kafka with a real PostgreSQL. Each test gets its own topics (a namespace
prefix), consumer groups and databases, so tests never see each other's records."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from kafka.admin import KafkaAdminClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from convohub.contracts import TOPICS
from convohub.runtime.bus.embedded import EmbeddedBus
from convohub.runtime.bus.kafka import KafkaBus
from convohub.runtime.bus.namespaced import NamespacedBus
from convohub.runtime.bus.port import EventBus
from convohub.runtime.store import ProjectionStore, create_engine, migrate_runtime
from convohub.runtime.topics_admin import apply_topics


class Backend(ABC):
    """Makes buses and stores for one test; `close()` releases everything."""

    name: str

    def __init__(self) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:10]}."
        self._buses: list[EventBus] = []
        self._stores: list[ProjectionStore] = []

    async def bus(self) -> EventBus:
        """A started bus on this test's topics (a fresh connection each call)."""
        bus = NamespacedBus(await self._inner_bus(), self.prefix)
        await bus.start()
        self._buses.append(bus)
        return bus

    async def store(self, name: str) -> ProjectionStore:
        """A migrated projection store in its own database, shared by every call with `name`."""
        store = ProjectionStore(create_engine(await self.store_url(name)))
        await migrate_runtime(store.engine)
        self._stores.append(store)
        return store

    async def close(self) -> None:
        for bus in self._buses:
            await bus.stop()
        for store in self._stores:
            await store.engine.dispose()
        await self._cleanup()

    @abstractmethod
    async def _inner_bus(self) -> EventBus: ...

    @abstractmethod
    async def store_url(self, name: str) -> str: ...

    @abstractmethod
    def child_arguments(self) -> list[str]:
        """How a child process (scenarios/consumer_child.py) reaches the same log."""

    async def _cleanup(self) -> None:
        return None


class EmbeddedBackend(Backend):
    name = "embedded"

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.log_path = folder / "log.sqlite3"
        self._topics_created = False

    async def _inner_bus(self) -> EventBus:
        bus = EmbeddedBus(self.log_path)
        if not self._topics_created:
            await bus.start()
            for topic in TOPICS:
                await bus.create_topic(self.prefix + topic.name, topic.partitions)
            self._topics_created = True
        return bus

    async def store_url(self, name: str) -> str:
        return f"sqlite+aiosqlite:///{self.folder / name}.sqlite3"

    def child_arguments(self) -> list[str]:
        return ["--embedded-log", str(self.log_path), "--prefix", self.prefix]


class KafkaPostgresBackend(Backend):
    name = "kafka+postgresql"

    def __init__(self, bootstrap_servers: str, database_url: str) -> None:
        super().__init__()
        self.bootstrap_servers = bootstrap_servers
        self.database_url = database_url
        self._databases: dict[str, str] = {}
        self._topics_created = False

    async def _inner_bus(self) -> EventBus:
        if not self._topics_created:
            topics = [dataclasses.replace(t, name=self.prefix + t.name) for t in TOPICS]
            apply_topics(self.bootstrap_servers, topics, replication_factor=1)
            self._topics_created = True
        return KafkaBus(self.bootstrap_servers)

    async def store_url(self, name: str) -> str:
        if name not in self._databases:
            database = f"{self.prefix}{name}".replace(".", "_").replace("-", "_").lower()
            await self._admin(f'CREATE DATABASE "{database}"')
            self._databases[name] = database
        url = make_url(self.database_url).set(database=self._databases[name])
        return url.render_as_string(hide_password=False)

    def child_arguments(self) -> list[str]:
        return ["--kafka", self.bootstrap_servers, "--prefix", self.prefix]

    async def _admin(self, statement: str) -> None:
        engine = create_async_engine(self.database_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                await connection.execute(text(statement))
        finally:
            await engine.dispose()

    async def _cleanup(self) -> None:
        for database in self._databases.values():
            await self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if self._topics_created:
            # A broker that keeps every test's topics (about a hundred partitions each)
            # runs out of heap within a few runs of the suite.
            await asyncio.to_thread(self._delete_topics)

    def _delete_topics(self) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id="tests")
        try:
            mine = [name for name in admin.list_topics() if name.startswith(self.prefix)]
            if mine:
                admin.delete_topics(mine)
        finally:
            admin.close()
