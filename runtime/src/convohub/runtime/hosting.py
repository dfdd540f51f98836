"""Builds the bus and the stores a process needs from its settings: the one place that
knows which mode it runs in, so handlers and projections never do."""

from __future__ import annotations

from convohub.runtime.bus.port import EventBus
from convohub.runtime.settings import RuntimeSettings
from convohub.runtime.store import ProjectionStore, create_engine

EMBEDDED_LOG_FILE = "log.sqlite3"


def open_bus(settings: RuntimeSettings) -> EventBus:
    """The mode's event bus (not started yet)."""
    if settings.mode == "distributed":
        from convohub.runtime.bus.kafka import KafkaBus

        settings.check_mode_requirements()
        return KafkaBus(settings.kafka_bootstrap_servers, client_id=settings.service_name)
    from convohub.runtime.bus.embedded import EmbeddedBus

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return EmbeddedBus(
        settings.data_dir / EMBEDDED_LOG_FILE, poll_interval=settings.idle_poll_seconds
    )


def store_url(settings: RuntimeSettings, service: str) -> str:
    """Where a service's projections live: its SQLite file, or the configured database."""
    if settings.mode == "distributed":
        settings.check_mode_requirements()
        return settings.database_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{settings.data_dir / service}.sqlite3"


def open_store(settings: RuntimeSettings, service: str) -> ProjectionStore:
    """A service's projection store (the engine connects lazily)."""
    return ProjectionStore(create_engine(store_url(settings, service)))
