"""The runtime's Alembic history (positions and outbox); run it with `migrate_runtime`."""
