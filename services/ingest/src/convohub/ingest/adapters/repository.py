"""SQL for the channel side: dedupe claims and the conversation each contact belongs to.

Statements work on SQLite (embedded mode) and PostgreSQL alike.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.contracts.events.common import Channel
from convohub.ingest.adapters.tables import CONVERSATIONS, EMAIL_THREADS, INBOUND_CLAIMS
from convohub.ingest.domain.conversations import ConversationState, ConversationStatus
from convohub.runtime.store import ProjectionStore

ClaimKey = tuple[str, str, str]


class KeptConnection:
    """A write transaction for a serial writer (one coalescer's flushes) on a connection kept
    between its transactions, on PostgreSQL: a checkout from the pool pre-pings (BEGIN, a
    query, ROLLBACK: three round trips, a quarter of a claim batch's). After any error the
    connection is dropped, so a dead one is replaced, pinged, by the next transaction (and
    the caller's fallback path uses the pool). On SQLite it is `store.begin()`.
    """

    def __init__(self, store: Callable[[], ProjectionStore]) -> None:
        self._store = store
        self._kept: tuple[Any, AsyncConnection] | None = None  # (engine, connection)

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        store = self._store()
        if store.engine.dialect.name != "postgresql":
            async with store.begin() as connection:
                yield connection
            return
        if self._kept is not None and self._kept[0] is not store.engine:
            await self.close()  # the service was started again on another store
        if self._kept is None:
            self._kept = (store.engine, await store.engine.connect())
        connection = self._kept[1]
        try:
            async with connection.begin():
                yield connection
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Give the connection back to the pool (before the store closes)."""
        if self._kept is not None:
            connection = self._kept[1]
            self._kept = None
            with contextlib.suppress(Exception):
                await connection.close()


def insert_ignoring_duplicates(connection: AsyncConnection, table: Any) -> Any:
    """An INSERT that does nothing when the primary key exists (both dialects)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def _claim_filter(key: ClaimKey) -> Any:
    tenant_id, channel_id, dedupe_key = key
    return and_(
        INBOUND_CLAIMS.c.tenant_id == tenant_id,
        INBOUND_CLAIMS.c.channel_id == channel_id,
        INBOUND_CLAIMS.c.dedupe_key == dedupe_key,
    )


async def relax_commit(connection: AsyncConnection) -> None:
    """Let this transaction commit without waiting for its WAL flush (PostgreSQL).

    Safe for claim bookkeeping only: WAL is flushed in order, so the next synchronous
    commit (the decision, which stores the events to publish on the claim) makes the
    claim durable too; a lost `done` mark only means a retry re-publishes the same ids.
    """
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SET LOCAL synchronous_commit TO OFF"))


def _claim_insert(dialect: Any) -> Any:
    return (
        dialect.insert(INBOUND_CLAIMS)
        .on_conflict_do_nothing()
        .values(
            tenant_id=bindparam("claim_tenant"),
            channel_id=bindparam("claim_channel"),
            dedupe_key=bindparam("claim_key"),
            state="pending",
            owner=bindparam("claim_owner"),
            claimed_at=bindparam("claim_at", type_=INBOUND_CLAIMS.c.claimed_at.type),
        )
    )


# The hot path's statements are built once: building one costs more CPU (about 0.15 ms
# each) than executing it, and a prebuilt statement's cache key is memoised.
_CLAIM_INSERTS = {"postgresql": _claim_insert(postgresql), "sqlite": _claim_insert(sqlite)}
_CLAIM_WHERE = and_(
    INBOUND_CLAIMS.c.tenant_id == bindparam("claim_tenant"),
    INBOUND_CLAIMS.c.channel_id == bindparam("claim_channel"),
    INBOUND_CLAIMS.c.dedupe_key == bindparam("claim_key"),
)


def _claim_params(key: ClaimKey) -> dict[str, str]:
    tenant_id, channel_id, dedupe_key = key
    return {"claim_tenant": tenant_id, "claim_channel": channel_id, "claim_key": dedupe_key}


async def try_claim(connection: AsyncConnection, key: ClaimKey, owner: str, now: datetime) -> bool:
    """Insert a pending claim; False when someone claimed the key before (on PostgreSQL a
    claim inserted by a transaction still open is waited for)."""
    result = await connection.execute(
        _CLAIM_INSERTS[connection.dialect.name],
        {**_claim_params(key), "claim_owner": owner, "claim_at": now},
    )
    return result.rowcount == 1


_READ_CLAIM = select(
    INBOUND_CLAIMS.c.state,
    INBOUND_CLAIMS.c.owner,
    INBOUND_CLAIMS.c.claimed_at,
    INBOUND_CLAIMS.c.records,
    INBOUND_CLAIMS.c.outcome,
).where(_CLAIM_WHERE)


_CLAIMS_RETURNING = {
    name: statement.returning(
        INBOUND_CLAIMS.c.tenant_id, INBOUND_CLAIMS.c.channel_id, INBOUND_CLAIMS.c.dedupe_key
    )
    for name, statement in _CLAIM_INSERTS.items()
}


async def try_claims(
    connection: AsyncConnection, claims: Sequence[tuple[ClaimKey, str]], now: datetime
) -> set[ClaimKey]:
    """Insert many pending claims (key, owner) in one statement; the keys won. Inserted in
    key order, so two replicas' batches never wait for each other's claims in a cycle."""
    rows = [
        {**_claim_params(key), "claim_owner": owner, "claim_at": now}
        for key, owner in sorted(claims)
    ]
    result = await connection.execute(_CLAIMS_RETURNING[connection.dialect.name], rows)
    return {(row.tenant_id, row.channel_id, row.dedupe_key) for row in result}


async def read_claim(connection: AsyncConnection, key: ClaimKey) -> Any:
    return (await connection.execute(_READ_CLAIM, _claim_params(key))).one_or_none()


async def take_over_claim(
    connection: AsyncConnection, key: ClaimKey, old_owner: str, owner: str, now: datetime
) -> bool:
    """Take a stale pending claim from a crashed (or stuck) owner; True if it is ours now."""
    result = await connection.execute(
        update(INBOUND_CLAIMS)
        .where(
            _claim_filter(key),
            INBOUND_CLAIMS.c.owner == old_owner,
            INBOUND_CLAIMS.c.state == "pending",
        )
        .values(owner=owner, claimed_at=now)
    )
    return result.rowcount == 1


_STORE_RECORDS = (
    update(INBOUND_CLAIMS)
    .where(_CLAIM_WHERE, INBOUND_CLAIMS.c.owner == bindparam("claim_owner"))
    .values(
        records=bindparam("claim_records", type_=INBOUND_CLAIMS.c.records.type),
        outcome=bindparam("claim_outcome", type_=INBOUND_CLAIMS.c.outcome.type),
    )
)


async def store_claim_records(
    connection: AsyncConnection, key: ClaimKey, owner: str, records: list[str], outcome: Any
) -> bool:
    result = await connection.execute(
        _STORE_RECORDS,
        {
            **_claim_params(key),
            "claim_owner": owner,
            "claim_records": records,
            "claim_outcome": outcome,
        },
    )
    return result.rowcount == 1


async def store_many_claim_records(
    connection: AsyncConnection, decided: Sequence[tuple[ClaimKey, str, list[str], Any]]
) -> None:
    """`store_claim_records` for claims this transaction inserted (executemany)."""
    await connection.execute(
        _STORE_RECORDS,
        [
            {
                **_claim_params(key),
                "claim_owner": owner,
                "claim_records": records,
                "claim_outcome": outcome,
            }
            for key, owner, records, outcome in decided
        ],
    )


_FINISH = (
    update(INBOUND_CLAIMS)
    .where(
        INBOUND_CLAIMS.c.tenant_id == bindparam("claim_tenant"),
        INBOUND_CLAIMS.c.channel_id == bindparam("claim_channel"),
        INBOUND_CLAIMS.c.dedupe_key == bindparam("claim_key"),
        INBOUND_CLAIMS.c.owner == bindparam("claim_owner"),
    )
    .values(
        state="done",
        records=None,
        outcome=bindparam("claim_outcome", type_=INBOUND_CLAIMS.c.outcome.type),
    )
)


async def finish_claims(
    connection: AsyncConnection, finished: list[tuple[ClaimKey, str, Any]]
) -> None:
    """Mark published claims done, many in one statement (executemany)."""
    await relax_commit(connection)
    await connection.execute(
        _FINISH,
        [
            {
                "claim_tenant": tenant_id,
                "claim_channel": channel_id,
                "claim_key": dedupe_key,
                "claim_owner": owner,
                "claim_outcome": outcome,
            }
            for (tenant_id, channel_id, dedupe_key), owner, outcome in finished
        ],
    )


async def expire_claim(
    connection: AsyncConnection, key: ClaimKey, owner: str, stale_at: datetime
) -> None:
    """Make a claim whose publish failed immediately retakable by the provider's retry."""
    await connection.execute(
        update(INBOUND_CLAIMS)
        .where(_claim_filter(key), INBOUND_CLAIMS.c.owner == owner)
        .values(claimed_at=stale_at)
    )


async def release_claim(connection: AsyncConnection, key: ClaimKey, owner: str) -> None:
    await connection.execute(
        delete(INBOUND_CLAIMS).where(_claim_filter(key), INBOUND_CLAIMS.c.owner == owner)
    )


_LOCK_CUSTOMER = text("SELECT pg_advisory_xact_lock(:id)")
# unnest yields the array's elements in order: the locks are taken in ascending id order.
_LOCK_CUSTOMERS = text(
    "SELECT count(pg_advisory_xact_lock(id)) FROM unnest(CAST(:ids AS BIGINT[])) AS id"
)


def _customer_lock_id(tenant_id: str, customer_key: str) -> int:
    digest = hashlib.sha256(f"ingest-customer/{tenant_id}/{customer_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def lock_customer(connection: AsyncConnection, tenant_id: str, customer_key: str) -> None:
    """Serialise decisions about one customer's conversations across replicas (PostgreSQL;
    SQLite's write transaction already serialises everything)."""
    if connection.dialect.name != "postgresql":
        return
    await connection.execute(_LOCK_CUSTOMER, {"id": _customer_lock_id(tenant_id, customer_key)})


async def lock_customers(connection: AsyncConnection, customers: Iterable[tuple[str, str]]) -> None:
    """`lock_customer` for many (tenant, customer key) pairs in one statement, in a fixed
    order (ascending lock id), so two batches never wait for each other in a cycle."""
    if connection.dialect.name != "postgresql":
        return
    ids = sorted({_customer_lock_id(tenant_id, key) for tenant_id, key in customers})
    if ids:
        await connection.execute(_LOCK_CUSTOMERS, {"ids": ids})


def _state(row: Any) -> ConversationState:
    return ConversationState(
        conversation_id=row.conversation_id,
        channel=Channel(row.channel),
        channel_id=row.channel_id,
        status=ConversationStatus(row.status),
        survey_pending=bool(row.survey_pending),
    )


_STATE_COLUMNS = (
    CONVERSATIONS.c.conversation_id,
    CONVERSATIONS.c.channel,
    CONVERSATIONS.c.channel_id,
    CONVERSATIONS.c.status,
    CONVERSATIONS.c.survey_pending,
)


_LATEST_CONVERSATION = (
    select(*_STATE_COLUMNS)
    .where(
        CONVERSATIONS.c.tenant_id == bindparam("latest_tenant"),
        CONVERSATIONS.c.customer_key == bindparam("latest_customer"),
    )
    # At most one conversation of a customer is not closed; else the latest closed one.
    .order_by(
        case((CONVERSATIONS.c.status == ConversationStatus.CLOSED.value, 1), else_=0),
        CONVERSATIONS.c.started_at.desc(),
    )
    .limit(1)
)


async def latest_conversation(
    connection: AsyncConnection, tenant_id: str, customer_key: str
) -> ConversationState | None:
    parameters = {"latest_tenant": tenant_id, "latest_customer": customer_key}
    row = (await connection.execute(_LATEST_CONVERSATION, parameters)).first()
    return _state(row) if row else None


_LATEST_RANKED = (
    select(
        CONVERSATIONS.c.customer_key,
        *_STATE_COLUMNS,
        func.row_number()
        .over(
            partition_by=CONVERSATIONS.c.customer_key,
            order_by=(
                case((CONVERSATIONS.c.status == ConversationStatus.CLOSED.value, 1), else_=0),
                CONVERSATIONS.c.started_at.desc(),
            ),
        )
        .label("rank"),
    )
    .where(
        CONVERSATIONS.c.tenant_id == bindparam("latest_tenant"),
        CONVERSATIONS.c.customer_key.in_(bindparam("latest_customers", expanding=True)),
    )
    .subquery()
)
_LATEST_CONVERSATIONS = select(_LATEST_RANKED).where(_LATEST_RANKED.c.rank == 1)


async def latest_conversations(
    connection: AsyncConnection, tenant_id: str, customer_keys: Iterable[str]
) -> dict[str, ConversationState]:
    """`latest_conversation` of many customers of a tenant in one query, by customer key
    (customers without a conversation are absent)."""
    parameters = {"latest_tenant": tenant_id, "latest_customers": sorted(set(customer_keys))}
    rows = await connection.execute(_LATEST_CONVERSATIONS, parameters)
    return {row.customer_key: _state(row) for row in rows}


_START_CONVERSATION = CONVERSATIONS.insert()


@cache
def _conversation_update(columns: tuple[str, ...]) -> Any:
    """UPDATE of these columns of one conversation, bound by name (`set_<column>`)."""
    return (
        update(CONVERSATIONS)
        .where(CONVERSATIONS.c.conversation_id == bindparam("updated_conversation"))
        .values(
            {
                column: bindparam(f"set_{column}", type_=CONVERSATIONS.c[column].type)
                for column in columns
            }
        )
    )


async def save_conversations(
    connection: AsyncConnection,
    started: Sequence[dict[str, Any]],
    changed: dict[str, dict[str, Any]],
) -> None:
    """Insert new conversations (full rows) and update others (conversation id -> changed
    columns), one executemany per shape of change, in conversation id order."""
    if started:
        await connection.execute(_START_CONVERSATION, list(started))
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for conversation_id in sorted(changed):
        values = changed[conversation_id]
        shapes.setdefault(tuple(sorted(values)), []).append(
            {"updated_conversation": conversation_id}
            | {f"set_{column}": value for column, value in values.items()}
        )
    for columns, rows in shapes.items():
        await connection.execute(_conversation_update(columns), rows)


async def threaded_conversation(
    connection: AsyncConnection, tenant_id: str, refs: tuple[str, ...]
) -> ConversationState | None:
    """The conversation of the most recent referenced e-mail that ingest has seen."""
    if not refs:
        return None
    query = (
        select(*_STATE_COLUMNS)
        .join(EMAIL_THREADS, EMAIL_THREADS.c.conversation_id == CONVERSATIONS.c.conversation_id)
        .where(EMAIL_THREADS.c.tenant_id == tenant_id, EMAIL_THREADS.c.message_ref.in_(refs))
        .order_by(CONVERSATIONS.c.started_at.desc())
        .limit(1)
    )
    row = (await connection.execute(query)).first()
    return _state(row) if row else None


async def remember_thread_message(
    connection: AsyncConnection, tenant_id: str, message_ref: str, conversation_id: str
) -> None:
    await connection.execute(
        insert_ignoring_duplicates(connection, EMAIL_THREADS).values(
            tenant_id=tenant_id, message_ref=message_ref[:512], conversation_id=conversation_id
        )
    )
