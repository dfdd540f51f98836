"""The runtime's own tables, which live next to each service's projection tables.

`convohub_positions` is the exactly-once bookkeeping: for each consumer group and
partition, the offset of the next record to apply (records below it were applied).
`convohub_processed_events` remembers, per consumer group, the ids of the events it
applied: an outbox re-published after a crash puts the same event on the log again at a
new offset, and the id is how the group recognises it.
`convohub_outbox` holds the events handlers emitted, written in the handler's
transaction and published in `seq` order by the outbox relay; a row whose `value` is NULL
is a tombstone (published as a record with a null value, for a compacted topic).

The Alembic history under `migrations/` creates these tables; keep the two in step (a
test compares them).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)

RUNTIME_METADATA = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

POSITIONS = Table(
    "convohub_positions",
    RUNTIME_METADATA,
    Column("consumer_group", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("next_offset", BigInteger, nullable=False),
)

PROCESSED_EVENTS = Table(
    "convohub_processed_events",
    RUNTIME_METADATA,
    Column("consumer_group", String(255), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False),
)

OUTBOX = Table(
    "convohub_outbox",
    RUNTIME_METADATA,
    # INTEGER on SQLite so the column is the rowid; AUTOINCREMENT so a purge of the newest
    # rows never lets a number be handed out twice.
    Column(
        "seq",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("event_id", String(255), nullable=False, unique=True),
    Column("topic", String(255), nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("value", LargeBinary, nullable=True),  # NULL: a tombstone
    # [[name, base64 of the value], ...]: header values are bytes; base64 keeps them exact.
    Column("headers", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    sqlite_autoincrement=True,
)

# The relay's query (unpublished rows in seq order) reads only this small partial index.
Index(
    "ix_convohub_outbox_pending",
    OUTBOX.c.seq,
    postgresql_where=OUTBOX.c.published_at.is_(None),
    sqlite_where=OUTBOX.c.published_at.is_(None),
)

# Pruning old ids (`ProjectionStore.forget_processed_before`) reads by age.
Index("ix_convohub_processed_events_processed_at", PROCESSED_EVENTS.c.processed_at)
