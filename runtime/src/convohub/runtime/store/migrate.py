"""Alembic, driven from code: upgrade a migration history to its head.

Every history (the runtime's, and each service's for its own projection tables) keeps
its own version table, so several histories share one database without seeing each
other. A history's `env.py` is two lines:

    from convohub.runtime.store.migrate import run_migrations_in_env
    run_migrations_in_env()

No alembic.ini is needed: `migrate` builds the Alembic `Config` itself and hands the
connection to `env.py` (Alembic's "connection sharing" recipe, run through `run_sync`).
"""

from __future__ import annotations

import zlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

RUNTIME_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
"""The runtime's own history (positions and outbox)."""

RUNTIME_VERSION_TABLE = "convohub_runtime_alembic_version"

_CONNECTION = "convohub.connection"
_VERSION_TABLE = "convohub.version_table"
_MIGRATION_LOCK_CLASS = 0x43484D47  # "CHMG": advisory-lock namespace of migrations


async def migrate(engine: AsyncEngine, script_location: str | Path, version_table: str) -> None:
    """Upgrade the history at `script_location` to head, recorded in `version_table`.

    Runs in one transaction (DDL included, on both SQLite and PostgreSQL), so a failing
    revision leaves nothing behind. Idempotent; replicas starting together on PostgreSQL
    serialise on an advisory lock, so only the first one migrates.
    """
    config = Config()
    # ConfigParser interpolates '%'; a path may contain one.
    config.set_main_option("script_location", str(script_location).replace("%", "%%"))
    config.attributes[_VERSION_TABLE] = version_table
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:lock_class, :lock_id)"),
                {"lock_class": _MIGRATION_LOCK_CLASS, "lock_id": _int4(version_table)},
            )
        await connection.run_sync(_upgrade_to_head, config)


async def migrate_runtime(engine: AsyncEngine) -> None:
    """Create or upgrade the runtime's own tables (positions and outbox)."""
    await migrate(engine, RUNTIME_MIGRATIONS, RUNTIME_VERSION_TABLE)


def run_migrations_in_env() -> None:
    """The body of a history's `env.py`: run its revisions on the connection `migrate` gave."""
    from alembic import context

    connection = context.config.attributes.get(_CONNECTION)
    if connection is None:
        raise RuntimeError(
            "this migration history runs through convohub.runtime.store.migrate(), "
            "not the alembic command line"
        )
    context.configure(
        connection=connection,
        version_table=context.config.attributes[_VERSION_TABLE],
        render_as_batch=True,  # autogenerate emits SQLite-safe ALTERs
    )
    with context.begin_transaction():
        context.run_migrations()


def _upgrade_to_head(connection: Connection, config: Config) -> None:
    config.attributes[_CONNECTION] = connection
    command.upgrade(config, "head")


def _int4(name: str) -> int:
    """A stable signed 32-bit number for a name (advisory lock ids are int4 pairs)."""
    value = zlib.crc32(name.encode())
    return value - (1 << 32) if value >= 1 << 31 else value
