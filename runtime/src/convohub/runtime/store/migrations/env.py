"""Alembic environment of the runtime's history (see `convohub.runtime.store.migrate`)."""

from convohub.runtime.store.migrate import run_migrations_in_env

run_migrations_in_env()
