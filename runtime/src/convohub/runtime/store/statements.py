"""The SQL the unit of work and the relay share, built once per dialect.

Upserts differ between PostgreSQL and SQLite only in the import of `insert`; the rest
(ON CONFLICT, `excluded`) is the same on both.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Insert, String, bindparam, case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect

from convohub.contracts import KafkaRecord
from convohub.runtime.store.tables import OUTBOX, POSITIONS, PROCESSED_EVENTS

OUTBOX_WRITE_LOCK = 0x43480001  # "CH" + 1
"""Held from a transaction's outbox insert to its commit, so seq order is commit order."""
OUTBOX_RELAY_LOCK = 0x43480002  # "CH" + 2
"""Held by the one relay publishing from this database."""


def outbox_lock_key(kind: int) -> str:
    """SQL of a PostgreSQL advisory-lock key (bigint): `kind` and the outbox table's oid."""
    # The oid keeps relays of different schemas of one database apart.
    return f"(({kind}::bigint << 32) | '{OUTBOX.name}'::regclass::oid::bigint)"


def _insert(dialect: Dialect) -> Any:
    if dialect.name == "postgresql":
        return postgresql.insert
    if dialect.name == "sqlite":
        return sqlite.insert
    raise ValueError(f"unsupported database dialect {dialect.name!r}")


def insert_missing_positions(dialect: Dialect) -> Insert:
    """INSERT of position rows that leaves existing rows alone."""
    statement = _insert(dialect)(POSITIONS)
    return statement.on_conflict_do_nothing(index_elements=list(POSITIONS.primary_key))


def upsert_positions(dialect: Dialect) -> Insert:
    """INSERT or UPDATE of position rows; a stored offset never moves backwards."""
    statement = _insert(dialect)(POSITIONS)
    keep_max = case(
        (statement.excluded.next_offset > POSITIONS.c.next_offset, statement.excluded.next_offset),
        else_=POSITIONS.c.next_offset,
    )
    return statement.on_conflict_do_update(
        index_elements=list(POSITIONS.primary_key), set_={"next_offset": keep_max}
    )


def insert_processed_events(dialect: Dialect) -> Insert:
    """INSERT of processed event ids; an id the group already has is skipped."""
    statement = _insert(dialect)(PROCESSED_EVENTS)
    return statement.on_conflict_do_nothing(index_elements=list(PROCESSED_EVENTS.primary_key))


def insert_processed_events_unnested(rows: Sequence[dict[str, Any]]) -> Insert:
    """The PostgreSQL form of `insert_processed_events` for many rows: ONE statement over
    unnested array parameters (asyncpg's executemany runs one statement per row)."""
    columns = ("consumer_group", "event_id")
    arrays = [
        func.unnest(bindparam(name, [row[name] for row in rows], type_=ARRAY(String(255))))
        for name in columns
    ]
    processed_at = bindparam("processed_at", rows[0]["processed_at"], type_=DateTime(True))
    statement = postgresql.insert(PROCESSED_EVENTS).from_select(
        [*columns, "processed_at"], select(*arrays, processed_at)
    )
    return statement.on_conflict_do_nothing(index_elements=list(PROCESSED_EVENTS.primary_key))


def insert_outbox_rows(dialect: Dialect) -> Insert:
    """INSERT of outbox rows; an event id already in the outbox is skipped."""
    statement = _insert(dialect)(OUTBOX)
    return statement.on_conflict_do_nothing(index_elements=[OUTBOX.c.event_id])


def outbox_row(event_id: str, record: KafkaRecord, created_at: datetime) -> dict[str, Any]:
    """The outbox row of a record (headers as [name, base64] pairs)."""
    return {
        "event_id": event_id,
        "topic": record.topic,
        "key": record.key,
        "value": record.value,
        "headers": [
            [name, base64.b64encode(value).decode("ascii")] for name, value in record.headers
        ],
        "created_at": created_at,
    }


def record_of(row: Any) -> KafkaRecord:
    """The record an outbox row holds, byte for byte as it was emitted."""
    headers: Sequence[Sequence[str]] = row.headers
    return KafkaRecord(
        topic=row.topic,
        key=row.key,
        value=row.value,
        headers=tuple((name, base64.b64decode(value)) for name, value in headers),
    )
