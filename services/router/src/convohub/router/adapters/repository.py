"""SQL over the router's tables, inside the caller's transaction.

Capacity is arbitrated in the database: `reserve` (a transfer to a named agent) is two
conditional updates (`load < capacity`); a dispatch round's `Placements` add its loads and
then refuse the whole round if any load of its agents is above capacity, so no such state is
ever committed. `claim` (and `Placements` for the round's conversations) moves a conversation
from one state to the next only if it is still in the expected state. Every write transaction
also takes the advisory lock of each tenant it works for first on PostgreSQL (in tenant id
order), so replicas' dispatch rounds for one tenant never interleave (and never deadlock),
while different tenants' rounds run in parallel.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections import Counter
from collections.abc import Awaitable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.contracts.events.common import AgentTier, Channel, Priority
from convohub.router.adapters.tables import (
    AGENT_CHANNELS,
    AGENT_VERSIONS,
    AGENTS,
    CONVERSATIONS,
    CUSTOMERS,
    ROUND_ROBIN,
    SEGMENTS,
)
from convohub.router.domain.assignment import AgentState, Waiting
from convohub.router.domain.config import AgentConfig


def tenant_lock_key(tenant_id: str) -> int:
    """A signed 64-bit advisory lock key for the tenant's routing state."""
    digest = hashlib.sha256(f"convohub.router\x00{tenant_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def customer_key(tenant_id: str, channel_id: str, address: str) -> str:
    """A pseudonymous key for a customer's channel address (the address itself is not kept)."""
    return hashlib.sha256(f"{tenant_id}\x00{channel_id}\x00{address}".encode()).hexdigest()[:40]


async def lock_tenants(connection: AsyncConnection, tenant_ids: Iterable[str]) -> None:
    """Take the tenants' router locks until the transaction ends, in one order for everyone
    (tenant id), so two transactions never wait on each other in a cycle. (SQLite: the
    transaction's `BEGIN IMMEDIATE` already serialises every writer.)"""
    if connection.dialect.name != "postgresql":
        return
    for tenant_id in sorted(set(tenant_ids)):
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)").bindparams(
                bindparam("key", tenant_lock_key(tenant_id))
            )
        )


def _insert(connection: AsyncConnection, table: Any) -> Any:
    """The dialect's INSERT, which has `on_conflict_do_nothing` / `on_conflict_do_update`."""
    return _dialect_insert(connection.dialect.name, table)


def _dialect_insert(dialect_name: str, table: Any) -> Any:
    return (postgresql if dialect_name == "postgresql" else sqlite).insert(table)


# The hot path's statements are built once, with bind parameters (`b_*` for keys, `v_*` for
# values): building one costs more CPU than executing it.


def _bound(table: Any, keys: Iterable[str]) -> dict[str, Any]:
    """`values()` of `keys`, each bound to `v_<key>` with its column's type."""
    return {key: bindparam(f"v_{key}", type_=table.c[key].type) for key in keys}


def _values(values: dict[str, Any]) -> dict[str, Any]:
    return {f"v_{key}": value for key, value in values.items()}


# --- agent versions -------------------------------------------------------------------------


ROSTER_ROW = ""
"""The `agent_id` of the tenant's own row in `router_agent_versions`: a new version whenever
any of its agents changes. (An agent named "" would share it: harmless, it is then read
again more often.)"""
_CHANGES = "convohub.router.agent_changes"


@dataclass
class AgentChanges:
    """A transaction's changes to one tenant's agents."""

    before: int | None
    """The tenant's roster version when the transaction first changed an agent."""
    written: list[int] = field(default_factory=list)
    """The roster versions it wrote since, the last one current."""
    agents: dict[str, int] = field(default_factory=dict)
    """The agents it changed, with the version it last gave each."""


def transaction_changes(connection: AsyncConnection, tenant_id: str) -> AgentChanges | None:
    """What the connection's current transaction changed of the tenant's agents, if anything."""
    held = connection.info.get(_CHANGES)
    if held is None or held[0] is not connection.sync_connection.get_transaction():
        return None
    changes: AgentChanges | None = held[1].get(tenant_id)
    return changes


async def changed_agents(
    connection: AsyncConnection, tenant_id: str, agent_ids: Iterable[str]
) -> None:
    """Give the agents, and the tenant's roster, new random versions in the caller's
    transaction (never counters: a rolled-back change must not pass for a later one). Every
    function here that changes an agent's row or channel rows calls it, so that an in-memory
    copy (`roster.Rosters`) is known to be stale, whoever changed it, once committed."""
    agent_ids = set(agent_ids)
    if not agent_ids:
        return
    transaction = connection.sync_connection.get_transaction()
    held = connection.info.get(_CHANGES)
    if held is None or held[0] is not transaction:
        held = connection.info[_CHANGES] = (transaction, {})
    changes = held[1].get(tenant_id)
    if changes is None:
        changes = held[1][tenant_id] = AgentChanges(await roster_version(connection, tenant_id))
    roster = secrets.randbits(62)
    rows = [
        {"b_tenant": tenant_id, "b_agent": agent_id, "b_version": secrets.randbits(62)}
        for agent_id in (*agent_ids, ROSTER_ROW)
    ]
    rows[-1]["b_version"] = roster
    await connection.execute(_set_versions(connection.dialect.name), rows)
    changes.written.append(roster)
    changes.agents.update((row["b_agent"], row["b_version"]) for row in rows[:-1])


@functools.cache
def _set_versions(dialect_name: str) -> Any:
    statement = _dialect_insert(dialect_name, AGENT_VERSIONS).values(
        tenant_id=bindparam("b_tenant"),
        agent_id=bindparam("b_agent"),
        version=bindparam("b_version"),
    )
    return statement.on_conflict_do_update(
        index_elements=[AGENT_VERSIONS.c.tenant_id, AGENT_VERSIONS.c.agent_id],
        set_={"version": statement.excluded.version},
    )


_ROSTER_VERSION = select(AGENT_VERSIONS.c.version).where(
    AGENT_VERSIONS.c.tenant_id == bindparam("b_tenant"), AGENT_VERSIONS.c.agent_id == ROSTER_ROW
)


async def roster_version(connection: AsyncConnection, tenant_id: str) -> int | None:
    """The tenant's roster version (None before any agent of it changed)."""
    version: int | None = await connection.scalar(_ROSTER_VERSION, {"b_tenant": tenant_id})
    return version


_AGENT_VERSIONS = select(AGENT_VERSIONS.c.agent_id, AGENT_VERSIONS.c.version).where(
    AGENT_VERSIONS.c.tenant_id == bindparam("b_tenant"), AGENT_VERSIONS.c.agent_id != ROSTER_ROW
)


async def agent_versions(connection: AsyncConnection, tenant_id: str) -> dict[str, int]:
    """The tenant's agents' current versions (agents never changed since the table was added
    have none)."""
    rows = await connection.execute(_AGENT_VERSIONS, {"b_tenant": tenant_id})
    return dict(rows.all())


# --- agents ---------------------------------------------------------------------------------


async def upsert_agent(
    connection: AsyncConnection,
    tenant_id: str,
    agent_id: str,
    *,
    name: str | None,
    tier: AgentTier,
    skills: dict[str, int],
    capacity_total: int,
    per_channel: dict[str, int],
    now: datetime,
    only_if_missing: bool = False,
) -> bool:
    """Create or replace the agent's profile, keeping its load and presence; True if created."""
    exists = await connection.scalar(
        select(AGENTS.c.agent_id).where(
            AGENTS.c.tenant_id == tenant_id, AGENTS.c.agent_id == agent_id
        )
    )
    if exists and only_if_missing:
        return False
    if exists:
        values: dict[str, Any] = {"tier": tier.value, "skills": skills, "capacity": capacity_total}
        if name is not None:
            values["name"] = name
        await connection.execute(
            update(AGENTS)
            .where(AGENTS.c.tenant_id == tenant_id, AGENTS.c.agent_id == agent_id)
            .values(**values)
        )
    else:
        await connection.execute(
            insert(AGENTS).values(
                tenant_id=tenant_id,
                agent_id=agent_id,
                name=name or "",
                tier=tier.value,
                skills=skills,
                capacity=capacity_total,
                load=0,
                presence="offline",
                idle_since=now,
            )
        )
    current = {
        row.channel: row.capacity
        for row in await connection.execute(
            select(AGENT_CHANNELS.c.channel, AGENT_CHANNELS.c.capacity).where(
                AGENT_CHANNELS.c.tenant_id == tenant_id, AGENT_CHANNELS.c.agent_id == agent_id
            )
        )
    }
    for channel in Channel:
        limit = per_channel.get(channel.value, 0)
        if channel.value in current:
            if current[channel.value] != limit:
                await connection.execute(
                    update(AGENT_CHANNELS)
                    .where(
                        AGENT_CHANNELS.c.tenant_id == tenant_id,
                        AGENT_CHANNELS.c.agent_id == agent_id,
                        AGENT_CHANNELS.c.channel == channel.value,
                    )
                    .values(capacity=limit)
                )
        else:
            await connection.execute(
                insert(AGENT_CHANNELS).values(
                    tenant_id=tenant_id,
                    agent_id=agent_id,
                    channel=channel.value,
                    capacity=limit,
                    load=0,
                )
            )
    await changed_agents(connection, tenant_id, [agent_id])
    return not exists


async def add_configured_agent(
    connection: AsyncConnection,
    tenant_id: str,
    agent: AgentConfig,
    now: datetime,
    *,
    name: str | None = None,
) -> bool:
    """An agent of the tenant's `routing.agents` roster, unless the router knows it already
    (its profile may have been changed through the API since); True if created."""
    return await upsert_agent(
        connection,
        tenant_id,
        agent.id,
        name=name or agent.name,
        tier=agent.tier,
        skills=dict(agent.skills),
        capacity_total=agent.capacity.total,
        per_channel={c.value: n for c, n in agent.capacity.per_channel.items()},
        now=now,
        only_if_missing=True,
    )


async def agent_row(connection: AsyncConnection, tenant_id: str, agent_id: str) -> Any:
    return (
        await connection.execute(
            select(AGENTS).where(AGENTS.c.tenant_id == tenant_id, AGENTS.c.agent_id == agent_id)
        )
    ).first()


async def set_presence(
    connection: AsyncConnection, tenant_id: str, agent_id: str, presence: str, at: datetime
) -> str | None:
    """Set presence unless a later change was already applied; the previous presence, or None
    when nothing changed (unknown agent, same presence, or an older change)."""
    row = await agent_row(connection, tenant_id, agent_id)
    if row is None:
        return None
    changed_at = row.presence_changed_at
    if changed_at is not None and _aware(changed_at) > at:
        return None
    if row.presence == presence:
        return None  # e.g. our own change coming back from the log: nothing to redo
    values: dict[str, Any] = {"presence": presence, "presence_changed_at": at}
    if presence == "online":
        last = _aware(row.last_heartbeat_at) if row.last_heartbeat_at else at
        values["last_heartbeat_at"] = max(at, last)  # never older than a heartbeat seen
    await connection.execute(
        update(AGENTS)
        .where(AGENTS.c.tenant_id == tenant_id, AGENTS.c.agent_id == agent_id)
        .values(**values)
    )
    await changed_agents(connection, tenant_id, [agent_id])
    return None if row.presence == presence else str(row.presence)


async def heartbeat(
    connection: AsyncConnection, tenant_id: str, agent_id: str, at: datetime
) -> bool:
    result = await connection.execute(
        update(AGENTS)
        .where(AGENTS.c.tenant_id == tenant_id, AGENTS.c.agent_id == agent_id)
        .values(last_heartbeat_at=at)
    )
    return bool(result.rowcount)


async def silent_agents(connection: AsyncConnection, tenant_id: str, before: datetime) -> list[str]:
    rows = await connection.execute(
        select(AGENTS.c.agent_id).where(
            AGENTS.c.tenant_id == tenant_id,
            AGENTS.c.presence != "offline",
            AGENTS.c.last_heartbeat_at < before,
        )
    )
    return [row.agent_id for row in rows]


AGENT_STATE_COLUMNS = ("agent_id", "tier", "skills", "presence", "load", "capacity", "idle_since")


async def agent_states(
    connection: AsyncConnection, tenant_id: str, *, only: Collection[str] | None = None
) -> list[AgentState]:
    """The tenant's agents (or `only` those) with their loads and capacities per channel."""
    return [state for state, _ in await versioned_agent_states(connection, tenant_id, only=only)]


_VERSIONED_AGENTS = (
    select(*(AGENTS.c[name] for name in AGENT_STATE_COLUMNS), AGENT_VERSIONS.c.version)
    .select_from(
        AGENTS.outerjoin(
            AGENT_VERSIONS,
            (AGENT_VERSIONS.c.tenant_id == AGENTS.c.tenant_id)
            & (AGENT_VERSIONS.c.agent_id == AGENTS.c.agent_id),
        )
    )
    .where(AGENTS.c.tenant_id == bindparam("b_tenant"))
)
_AGENT_CHANNELS = select(
    AGENT_CHANNELS.c.agent_id,
    AGENT_CHANNELS.c.channel,
    AGENT_CHANNELS.c.load,
    AGENT_CHANNELS.c.capacity,
).where(
    AGENT_CHANNELS.c.tenant_id == bindparam("b_tenant"),
    (AGENT_CHANNELS.c.capacity > 0) | (AGENT_CHANNELS.c.load > 0),
)
_ONLY_AGENTS = bindparam("b_agents", expanding=True)
_STATE_QUERIES = {
    False: (_VERSIONED_AGENTS, _AGENT_CHANNELS),
    True: (
        _VERSIONED_AGENTS.where(AGENTS.c.agent_id.in_(_ONLY_AGENTS)),
        _AGENT_CHANNELS.where(AGENT_CHANNELS.c.agent_id.in_(_ONLY_AGENTS)),
    ),
}


async def versioned_agent_states(
    connection: AsyncConnection, tenant_id: str, *, only: Collection[str] | None = None
) -> list[tuple[AgentState, int | None]]:
    """`agent_states`, each with the agent's version (`changed_agents`)."""
    query, channel_query = _STATE_QUERIES[only is not None]
    parameters: dict[str, Any] = {"b_tenant": tenant_id}
    if only is not None:
        parameters["b_agents"] = sorted(only)
    agents = (await connection.execute(query, parameters)).all()
    agents.sort(key=lambda row: row.agent_id)
    channels: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
    for agent_id, channel, load, capacity in await connection.execute(channel_query, parameters):
        loads, caps = channels.setdefault(agent_id, ({}, {}))
        loads[channel], caps[channel] = load, capacity
    tiers = {tier.value: tier for tier in AgentTier}
    return [
        (
            AgentState(
                id=agent_id,
                tier=tiers[tier],
                skills=skills,
                online=presence == "online",
                load=load,
                capacity=capacity,
                channel_load=channels.get(agent_id, ({}, {}))[0],
                channel_capacity=channels.get(agent_id, ({}, {}))[1],
                idle_since=_aware(idle_since),
            ),
            version,
        )
        for agent_id, tier, skills, presence, load, capacity, idle_since, version in agents
    ]


async def agents_listing(connection: AsyncConnection, tenant_id: str) -> list[dict[str, Any]]:
    states = {state.id: state for state in await agent_states(connection, tenant_id)}
    rows = (
        await connection.execute(
            select(AGENTS).where(AGENTS.c.tenant_id == tenant_id).order_by(AGENTS.c.agent_id)
        )
    ).all()
    return [
        {
            "agent_id": row.agent_id,
            "name": row.name,
            "tier": row.tier,
            "skills": row.skills,
            "presence": row.presence,
            "load": row.load,
            "capacity": row.capacity,
            "channels": {
                channel: {"load": states[row.agent_id].channel_load[channel], "capacity": limit}
                for channel, limit in states[row.agent_id].channel_capacity.items()
                if limit or states[row.agent_id].channel_load[channel]
            },
            "last_heartbeat_at": row.last_heartbeat_at,
        }
        for row in rows
    ]


async def reserve(connection: AsyncConnection, tenant_id: str, agent_id: str, channel: str) -> bool:
    """Take one unit of the agent's capacity on `channel` and in total, or nothing."""
    per_channel = await connection.execute(
        update(AGENT_CHANNELS)
        .where(
            AGENT_CHANNELS.c.tenant_id == tenant_id,
            AGENT_CHANNELS.c.agent_id == agent_id,
            AGENT_CHANNELS.c.channel == channel,
            AGENT_CHANNELS.c.load < AGENT_CHANNELS.c.capacity,
        )
        .values(load=AGENT_CHANNELS.c.load + 1)
    )
    if per_channel.rowcount != 1:
        return False
    total = await connection.execute(
        update(AGENTS)
        .where(
            AGENTS.c.tenant_id == tenant_id,
            AGENTS.c.agent_id == agent_id,
            AGENTS.c.load < AGENTS.c.capacity,
        )
        .values(load=AGENTS.c.load + 1)
    )
    if total.rowcount != 1:
        await _release_channel(connection, tenant_id, agent_id, channel)
        return False
    await changed_agents(connection, tenant_id, [agent_id])
    return True


_RELEASE = (
    update(AGENTS)
    .where(
        AGENTS.c.tenant_id == bindparam("b_tenant"),
        AGENTS.c.agent_id == bindparam("b_agent"),
        AGENTS.c.load > 0,
    )
    .values(
        load=AGENTS.c.load - 1, idle_since=bindparam("v_idle_since", type_=AGENTS.c.idle_since.type)
    )
)
_RELEASE_CHANNEL = (
    update(AGENT_CHANNELS)
    .where(
        AGENT_CHANNELS.c.tenant_id == bindparam("b_tenant"),
        AGENT_CHANNELS.c.agent_id == bindparam("b_agent"),
        AGENT_CHANNELS.c.channel == bindparam("b_channel"),
        AGENT_CHANNELS.c.load > 0,
    )
    .values(load=AGENT_CHANNELS.c.load - 1)
)


async def release(
    connection: AsyncConnection, tenant_id: str, agent_id: str, channel: str, now: datetime
) -> None:
    await _release_channel(connection, tenant_id, agent_id, channel)
    await connection.execute(
        _RELEASE, {"b_tenant": tenant_id, "b_agent": agent_id, "v_idle_since": now}
    )
    await changed_agents(connection, tenant_id, [agent_id])


async def _release_channel(
    connection: AsyncConnection, tenant_id: str, agent_id: str, channel: str
) -> None:
    await connection.execute(
        _RELEASE_CHANNEL, {"b_tenant": tenant_id, "b_agent": agent_id, "b_channel": channel}
    )


class PlacementConflict(RuntimeError):
    """A dispatch round's writes would break capacity or single assignment (its view of the
    state was stale); the transaction must roll back and the batch be retried."""


@dataclass
class Placements:
    """One dispatch round's decisions, written together by `write`: capacity per channel and
    in total, the conversations' new states, the customers' last agents, the round-robin
    cursors. A handful of statements per round instead of four or five per decision."""

    tenant_id: str
    channel_loads: Counter[tuple[str, str]] = field(default_factory=Counter)
    offers: list[dict[str, Any]] = field(default_factory=list)
    assignments: list[dict[str, Any]] = field(default_factory=list)
    customers: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    round_robin: dict[str, str] = field(default_factory=dict)

    def reserve(self, agent_id: str, channel: str) -> None:
        self.channel_loads[(agent_id, channel)] += 1

    def assign(self, conversation_id: str, agent_id: str, attempts: int, explanation: Any) -> None:
        self.assignments.append(
            {
                "b_id": conversation_id,
                "b_agent": agent_id,
                "b_attempts": attempts,
                "b_explanation": explanation,
            }
        )

    def offer(
        self,
        conversation_id: str,
        agent_id: str,
        attempts: int,
        explanation: Any,
        offer_id: str,
        expires_at: datetime,
    ) -> None:
        self.offers.append(
            {
                "b_id": conversation_id,
                "b_agent": agent_id,
                "b_attempts": attempts,
                "b_explanation": explanation,
                "b_offer": offer_id,
                "b_expires": expires_at,
            }
        )

    async def write(self, connection: AsyncConnection) -> None:
        """Write the round; PlacementConflict (nothing of it must commit) if a load would
        exceed its capacity or a conversation was no longer queued.

        Where the driver counts the rows of an executemany (SQLite), each load is added only
        if it fits and the counts are checked; otherwise (asyncpg) the loads are added and
        then one query counts the loads above capacity."""
        if not self.channel_loads:
            return
        tenant = self.tenant_id
        counted = connection.dialect.supports_sane_multi_rowcount
        totals: Counter[str] = Counter()
        for (agent_id, _), count in self.channel_loads.items():
            totals[agent_id] += count
        channel_rows = [
            {"b_tenant": tenant, "b_agent": agent_id, "b_channel": channel, "b_count": count}
            for (agent_id, channel), count in self.channel_loads.items()
        ]
        total_rows = [
            {"b_tenant": tenant, "b_agent": agent_id, "b_count": count}
            for agent_id, count in totals.items()
        ]
        added = await _rowcount(connection.execute(_ADD_LOADS[counted][0], channel_rows))
        added += await _rowcount(connection.execute(_ADD_LOADS[counted][1], total_rows))
        await changed_agents(connection, tenant, sorted(totals))
        if counted:
            over = len(channel_rows) + len(total_rows) - added
        else:
            over = await connection.scalar(
                _OVER_CAPACITY, {"b_tenant": tenant, "b_agents": sorted(totals)}
            )
        if over:
            raise PlacementConflict(f"{over} agent load(s) of tenant {tenant} above capacity")
        moved = 0
        if self.assignments:
            moved += await _rowcount(connection.execute(_ASSIGN, self.assignments))
        if self.offers:
            moved += await _rowcount(connection.execute(_OFFER, self.offers))
        ids = [row["b_id"] for row in (*self.assignments, *self.offers)]
        if not counted:
            moved = await connection.scalar(_PLACED, {"b_ids": ids})
        if moved != len(ids):
            raise PlacementConflict(f"{len(ids) - moved} conversation(s) no longer queued")
        if self.customers:
            await connection.execute(
                _last_agents(connection.dialect.name),
                [
                    {"b_tenant": tenant, "b_key": key, "b_agent": agent_id, "b_at": at}
                    for key, (agent_id, at) in self.customers.items()
                ],
            )
        for group, agent_id in self.round_robin.items():
            await set_round_robin_last(connection, tenant, group, agent_id)


def _add_loads(table: Any, *keys: str, only_if_room: bool) -> Any:
    condition = [table.c.tenant_id == bindparam("b_tenant")]
    condition += [table.c[key] == bindparam(f"b_{key.removesuffix('_id')}") for key in keys]
    if only_if_room:
        condition.append(table.c.load + bindparam("b_count") <= table.c.capacity)
    return update(table).where(*condition).values(load=table.c.load + bindparam("b_count"))


_ADD_LOADS = {
    counted: (
        _add_loads(AGENT_CHANNELS, "agent_id", "channel", only_if_room=counted),
        _add_loads(AGENTS, "agent_id", only_if_room=counted),
    )
    for counted in (False, True)
}
"""Per channel and in total: with `True`, only where the load fits (the rows are counted)."""
_OVER_CAPACITY = select(
    select(func.count())
    .select_from(AGENT_CHANNELS)
    .where(
        AGENT_CHANNELS.c.tenant_id == bindparam("b_tenant"),
        AGENT_CHANNELS.c.agent_id.in_(bindparam("b_agents", expanding=True)),
        AGENT_CHANNELS.c.load > AGENT_CHANNELS.c.capacity,
    )
    .scalar_subquery()
    + select(func.count())
    .select_from(AGENTS)
    .where(
        AGENTS.c.tenant_id == bindparam("b_tenant"),
        AGENTS.c.agent_id.in_(bindparam("b_agents", expanding=True)),
        AGENTS.c.load > AGENTS.c.capacity,
    )
    .scalar_subquery()
)
_STILL_QUEUED = (CONVERSATIONS.c.conversation_id == bindparam("b_id")) & (
    CONVERSATIONS.c.state == "queued"
)
_PLACED_VALUES = {
    "agent_id": bindparam("b_agent"),
    "attempts": bindparam("b_attempts"),
    "explanation": bindparam("b_explanation", type_=CONVERSATIONS.c.explanation.type),
    "last_position": None,
}
_ASSIGN = update(CONVERSATIONS).where(_STILL_QUEUED).values(state="assigned", **_PLACED_VALUES)
_OFFER = (
    update(CONVERSATIONS)
    .where(_STILL_QUEUED)
    .values(
        state="offered",
        offer_id=bindparam("b_offer"),
        offer_expires_at=bindparam("b_expires", type_=CONVERSATIONS.c.offer_expires_at.type),
        **_PLACED_VALUES,
    )
)
_PLACED = (
    select(func.count())
    .select_from(CONVERSATIONS)
    .where(
        CONVERSATIONS.c.conversation_id.in_(bindparam("b_ids", expanding=True)),
        CONVERSATIONS.c.state.in_(["assigned", "offered"]),
    )
)


@functools.cache
def _last_agents(dialect_name: str) -> Any:
    statement = _dialect_insert(dialect_name, CUSTOMERS).values(
        tenant_id=bindparam("b_tenant"),
        customer_key=bindparam("b_key"),
        last_agent_id=bindparam("b_agent"),
        last_assigned_at=bindparam("b_at", type_=CUSTOMERS.c.last_assigned_at.type),
    )
    return statement.on_conflict_do_update(
        index_elements=[CUSTOMERS.c.tenant_id, CUSTOMERS.c.customer_key],
        set_={
            "last_agent_id": statement.excluded.last_agent_id,
            "last_assigned_at": statement.excluded.last_assigned_at,
        },
    )


async def _rowcount(execution: Awaitable[Any]) -> int:
    """The rows an (executemany) statement changed; only meaningful where the dialect
    `supports_sane_multi_rowcount`."""
    return int((await execution).rowcount)


# --- conversations --------------------------------------------------------------------------


_CONVERSATION = select(CONVERSATIONS).where(CONVERSATIONS.c.conversation_id == bindparam("b_id"))
_TENANT_CONVERSATION = _CONVERSATION.where(CONVERSATIONS.c.tenant_id == bindparam("b_tenant"))


async def conversation(
    connection: AsyncConnection, conversation_id: str, tenant_id: str | None = None
) -> Any:
    if tenant_id is None:
        return (await connection.execute(_CONVERSATION, {"b_id": conversation_id})).first()
    parameters = {"b_id": conversation_id, "b_tenant": tenant_id}
    return (await connection.execute(_TENANT_CONVERSATION, parameters)).first()


@functools.cache
def _insert_conversation(dialect_name: str, keys: tuple[str, ...]) -> Any:
    return (
        _dialect_insert(dialect_name, CONVERSATIONS)
        .values(_bound(CONVERSATIONS, keys))
        .on_conflict_do_nothing(index_elements=[CONVERSATIONS.c.conversation_id])
    )


async def insert_conversation(connection: AsyncConnection, **values: Any) -> bool:
    """Insert the conversation unless its id is known; True if inserted (one statement)."""
    values = {"excluded": [], "history": [], "attempts": 0, "vip": False, **values}
    statement = _insert_conversation(connection.dialect.name, tuple(sorted(values)))
    result = await connection.execute(statement, _values(values))
    return result.rowcount == 1


@functools.cache
def _claim(keys: tuple[str, ...]) -> Any:
    return (
        update(CONVERSATIONS)
        .where(
            CONVERSATIONS.c.conversation_id == bindparam("b_id"),
            CONVERSATIONS.c.state.in_(bindparam("b_expected", expanding=True)),
        )
        .values(_bound(CONVERSATIONS, keys))
    )


async def claim(
    connection: AsyncConnection, conversation_id: str, expected: Sequence[str], **values: Any
) -> bool:
    """Update the conversation only if it is still in one of the `expected` states."""
    result = await connection.execute(
        _claim(tuple(sorted(values))),
        {"b_id": conversation_id, "b_expected": list(expected), **_values(values)},
    )
    return result.rowcount == 1


QUEUE_COLUMNS = (
    "conversation_id",
    "skill_group",
    "channel",
    "priority",
    "queued_at",
    "required_tier",
    "preferred_agent",
    "preferred_until",
    "excluded",
    "last_position",
    "attempts",
    "customer_key",
)
"""What a dispatch round reads of each queued conversation (not its explanation or history)."""


_QUEUED = select(*(CONVERSATIONS.c[name] for name in QUEUE_COLUMNS)).where(
    CONVERSATIONS.c.tenant_id == bindparam("b_tenant"), CONVERSATIONS.c.state == "queued"
)


async def queued(connection: AsyncConnection, tenant_id: str) -> list[Any]:
    return (await connection.execute(_QUEUED, {"b_tenant": tenant_id})).all()


def waiting_of(row: Any) -> Waiting:
    return Waiting(
        conversation_id=row.conversation_id,
        skill_group=row.skill_group,
        channel=Channel(row.channel),
        priority=Priority(row.priority),
        queued_at=_aware(row.queued_at),
        required_tier=AgentTier(row.required_tier) if row.required_tier else None,
        preferred_agent=row.preferred_agent,
        preferred_until=_aware(row.preferred_until) if row.preferred_until else None,
        excluded=frozenset(row.excluded or ()),
    )


async def expired_offers(connection: AsyncConnection, tenant_id: str, now: datetime) -> list[Any]:
    return (
        await connection.execute(
            select(CONVERSATIONS).where(
                CONVERSATIONS.c.tenant_id == tenant_id,
                CONVERSATIONS.c.state == "offered",
                CONVERSATIONS.c.offer_expires_at <= now,
            )
        )
    ).all()


async def pending_offers(
    connection: AsyncConnection, tenant_id: str, agent_id: str | None
) -> list[Any]:
    """Offers waiting for an answer (of one agent, or all), the oldest queued first."""
    query = select(CONVERSATIONS).where(
        CONVERSATIONS.c.tenant_id == tenant_id, CONVERSATIONS.c.state == "offered"
    )
    if agent_id is not None:
        query = query.where(CONVERSATIONS.c.agent_id == agent_id)
    return (await connection.execute(query.order_by(CONVERSATIONS.c.queued_at))).all()


async def offer(connection: AsyncConnection, offer_id: str, tenant_id: str) -> Any:
    return (
        await connection.execute(
            select(CONVERSATIONS).where(
                CONVERSATIONS.c.offer_id == offer_id, CONVERSATIONS.c.tenant_id == tenant_id
            )
        )
    ).first()


# --- customers ------------------------------------------------------------------------------


_CUSTOMER = select(CUSTOMERS).where(
    CUSTOMERS.c.tenant_id == bindparam("b_tenant"), CUSTOMERS.c.customer_key == bindparam("b_key")
)


async def customer(connection: AsyncConnection, tenant_id: str, key: str) -> Any:
    parameters = {"b_tenant": tenant_id, "b_key": key}
    return (await connection.execute(_CUSTOMER, parameters)).first()


@functools.cache
def _remember_customer(dialect_name: str, keys: tuple[str, ...]) -> Any:
    statement = _dialect_insert(dialect_name, CUSTOMERS).values(
        _bound(CUSTOMERS, ("tenant_id", "customer_key", *keys))
    )
    index = [CUSTOMERS.c.tenant_id, CUSTOMERS.c.customer_key]
    if not keys:
        return statement.on_conflict_do_nothing(index_elements=index)
    return statement.on_conflict_do_update(
        index_elements=index, set_={key: statement.excluded[key] for key in keys}
    )


async def remember_customer(
    connection: AsyncConnection, tenant_id: str, key: str, **values: Any
) -> None:
    """Create the customer's row if missing, and set `values` on it (one statement)."""
    statement = _remember_customer(connection.dialect.name, tuple(sorted(values)))
    await connection.execute(
        statement, _values({"tenant_id": tenant_id, "customer_key": key, **values})
    )


async def segments(
    connection: AsyncConnection, tenant_id: str, customer_id: str | None
) -> set[str]:
    if customer_id is None:
        return set()
    rows = await connection.execute(
        select(SEGMENTS.c.segment_id).where(
            SEGMENTS.c.tenant_id == tenant_id, SEGMENTS.c.customer_id == customer_id
        )
    )
    return {row.segment_id for row in rows}


async def enter_segment(
    connection: AsyncConnection, tenant_id: str, customer_id: str, segment_id: str
) -> None:
    if segment_id not in await segments(connection, tenant_id, customer_id):
        await connection.execute(
            insert(SEGMENTS).values(
                tenant_id=tenant_id, customer_id=customer_id, segment_id=segment_id
            )
        )


async def leave_segment(
    connection: AsyncConnection, tenant_id: str, customer_id: str, segment_id: str
) -> None:
    await connection.execute(
        delete(SEGMENTS).where(
            SEGMENTS.c.tenant_id == tenant_id,
            SEGMENTS.c.customer_id == customer_id,
            SEGMENTS.c.segment_id == segment_id,
        )
    )


async def erase_customer(connection: AsyncConnection, tenant_id: str, customer_id: str) -> None:
    """Forget everything linking conversations to the customer (segments, sticky agent)."""
    keys = [
        row.customer_key
        for row in await connection.execute(
            select(CUSTOMERS.c.customer_key).where(
                CUSTOMERS.c.tenant_id == tenant_id, CUSTOMERS.c.customer_id == customer_id
            )
        )
    ]
    await connection.execute(
        delete(SEGMENTS).where(
            SEGMENTS.c.tenant_id == tenant_id, SEGMENTS.c.customer_id == customer_id
        )
    )
    await connection.execute(
        delete(CUSTOMERS).where(
            CUSTOMERS.c.tenant_id == tenant_id, CUSTOMERS.c.customer_id == customer_id
        )
    )
    condition = CONVERSATIONS.c.customer_id == customer_id
    if keys:
        condition = condition | CONVERSATIONS.c.customer_key.in_(keys)
    await connection.execute(
        update(CONVERSATIONS)
        .where(and_(CONVERSATIONS.c.tenant_id == tenant_id, condition))
        .values(customer_id=None, customer_key=None, preferred_agent=None)
    )


async def round_robin_last(connection: AsyncConnection, tenant_id: str, group: str) -> str | None:
    return await connection.scalar(
        select(ROUND_ROBIN.c.last_agent_id).where(
            ROUND_ROBIN.c.tenant_id == tenant_id, ROUND_ROBIN.c.skill_group == group
        )
    )


async def set_round_robin_last(
    connection: AsyncConnection, tenant_id: str, group: str, agent_id: str
) -> None:
    result = await connection.execute(
        update(ROUND_ROBIN)
        .where(ROUND_ROBIN.c.tenant_id == tenant_id, ROUND_ROBIN.c.skill_group == group)
        .values(last_agent_id=agent_id)
    )
    if result.rowcount == 0:
        await connection.execute(
            insert(ROUND_ROBIN).values(
                tenant_id=tenant_id, skill_group=group, last_agent_id=agent_id
            )
        )


def _aware(moment: datetime) -> datetime:
    from datetime import UTC

    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
