"""The projection store: engines, the runtime's tables and migrations, the unit of work
(projection writes, positions and outbox rows in one transaction) and the outbox relay."""

from convohub.runtime.store.database import create_engine
from convohub.runtime.store.forgetting import purge_published_for_keys
from convohub.runtime.store.migrate import (
    RUNTIME_MIGRATIONS,
    RUNTIME_VERSION_TABLE,
    migrate,
    migrate_runtime,
    run_migrations_in_env,
)
from convohub.runtime.store.outbox import OutboxRelay
from convohub.runtime.store.tables import OUTBOX, POSITIONS, PROCESSED_EVENTS, RUNTIME_METADATA
from convohub.runtime.store.unit_of_work import ProjectionStore, UnitOfWork

__all__ = [
    "OUTBOX",
    "POSITIONS",
    "PROCESSED_EVENTS",
    "RUNTIME_METADATA",
    "RUNTIME_MIGRATIONS",
    "RUNTIME_VERSION_TABLE",
    "OutboxRelay",
    "ProjectionStore",
    "UnitOfWork",
    "create_engine",
    "migrate",
    "migrate_runtime",
    "purge_published_for_keys",
    "run_migrations_in_env",
]
