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

import hashlib
import secrets
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
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
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


# --- agent versions -------------------------------------------------------------------------


async def changed_agents(
    connection: AsyncConnection, tenant_id: str, agent_ids: Iterable[str]
) -> None:
    """Give the agents new random versions in the caller's transaction. Every function here
    that changes an agent's row or channel rows calls it, so that an in-memory copy of an
    agent (`roster.Rosters`) is known to be stale, whoever changed it, once committed."""
    rows = [{"b_agent": agent_id, "b_version": secrets.randbits(62)} for agent_id in agent_ids]
    if not rows:
        return
    statement = _insert(connection, AGENT_VERSIONS).values(
        tenant_id=tenant_id, agent_id=bindparam("b_agent"), version=bindparam("b_version")
    )
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=[AGENT_VERSIONS.c.tenant_id, AGENT_VERSIONS.c.agent_id],
            set_={"version": statement.excluded.version},
        ),
        rows,
    )


async def agent_versions(connection: AsyncConnection, tenant_id: str) -> dict[str, int]:
    """The tenant's agents' current versions (agents never changed since the table was added
    have none)."""
    rows = await connection.execute(
        select(AGENT_VERSIONS.c.agent_id, AGENT_VERSIONS.c.version).where(
            AGENT_VERSIONS.c.tenant_id == tenant_id
        )
    )
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
    columns = [AGENTS.c[name] for name in AGENT_STATE_COLUMNS]
    query = select(*columns).where(AGENTS.c.tenant_id == tenant_id)
    channel_query = select(
        AGENT_CHANNELS.c.agent_id,
        AGENT_CHANNELS.c.channel,
        AGENT_CHANNELS.c.load,
        AGENT_CHANNELS.c.capacity,
    ).where(
        AGENT_CHANNELS.c.tenant_id == tenant_id,
        (AGENT_CHANNELS.c.capacity > 0) | (AGENT_CHANNELS.c.load > 0),
    )
    if only is not None:
        query = query.where(AGENTS.c.agent_id.in_(sorted(only)))
        channel_query = channel_query.where(AGENT_CHANNELS.c.agent_id.in_(sorted(only)))
    agents = (await connection.execute(query)).all()
    agents.sort(key=lambda row: row.agent_id)
    channels: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
    for agent_id, channel, load, capacity in await connection.execute(channel_query):
        loads, caps = channels.setdefault(agent_id, ({}, {}))
        loads[channel], caps[channel] = load, capacity
    tiers = {tier.value: tier for tier in AgentTier}
    return [
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
        )
        for agent_id, tier, skills, presence, load, capacity, idle_since in agents
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


async def release(
    connection: AsyncConnection, tenant_id: str, agent_id: str, channel: str, now: datetime
) -> None:
    await _release_channel(connection, tenant_id, agent_id, channel)
    await connection.execute(
        update(AGENTS)
        .where(AGENTS.c.tenant_id == tenant_id, AGENTS.c.agent_id == agent_id, AGENTS.c.load > 0)
        .values(load=AGENTS.c.load - 1, idle_since=now)
    )
    await changed_agents(connection, tenant_id, [agent_id])


async def _release_channel(
    connection: AsyncConnection, tenant_id: str, agent_id: str, channel: str
) -> None:
    await connection.execute(
        update(AGENT_CHANNELS)
        .where(
            AGENT_CHANNELS.c.tenant_id == tenant_id,
            AGENT_CHANNELS.c.agent_id == agent_id,
            AGENT_CHANNELS.c.channel == channel,
            AGENT_CHANNELS.c.load > 0,
        )
        .values(load=AGENT_CHANNELS.c.load - 1)
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
        exceed its capacity or a conversation was no longer queued."""
        if not self.channel_loads:
            return
        tenant = self.tenant_id
        totals: Counter[str] = Counter()
        for (agent_id, _), count in self.channel_loads.items():
            totals[agent_id] += count
        await connection.execute(
            update(AGENT_CHANNELS)
            .where(
                AGENT_CHANNELS.c.tenant_id == tenant,
                AGENT_CHANNELS.c.agent_id == bindparam("b_agent"),
                AGENT_CHANNELS.c.channel == bindparam("b_channel"),
            )
            .values(load=AGENT_CHANNELS.c.load + bindparam("b_count")),
            [
                {"b_agent": agent_id, "b_channel": channel, "b_count": count}
                for (agent_id, channel), count in self.channel_loads.items()
            ],
        )
        await connection.execute(
            update(AGENTS)
            .where(AGENTS.c.tenant_id == tenant, AGENTS.c.agent_id == bindparam("b_agent"))
            .values(load=AGENTS.c.load + bindparam("b_count")),
            [{"b_agent": agent_id, "b_count": count} for agent_id, count in totals.items()],
        )
        await changed_agents(connection, tenant, sorted(totals))
        agents = sorted(totals)
        over = await connection.scalar(
            select(func.count())
            .select_from(AGENT_CHANNELS)
            .where(
                AGENT_CHANNELS.c.tenant_id == tenant,
                AGENT_CHANNELS.c.agent_id.in_(agents),
                AGENT_CHANNELS.c.load > AGENT_CHANNELS.c.capacity,
            )
        ) + await connection.scalar(
            select(func.count())
            .select_from(AGENTS)
            .where(
                AGENTS.c.tenant_id == tenant,
                AGENTS.c.agent_id.in_(agents),
                AGENTS.c.load > AGENTS.c.capacity,
            )
        )
        if over:
            raise PlacementConflict(f"{over} agent load(s) of tenant {tenant} above capacity")
        queued = (CONVERSATIONS.c.conversation_id == bindparam("b_id")) & (
            CONVERSATIONS.c.state == "queued"
        )
        if self.assignments:
            await connection.execute(
                update(CONVERSATIONS)
                .where(queued)
                .values(
                    state="assigned",
                    agent_id=bindparam("b_agent"),
                    attempts=bindparam("b_attempts"),
                    explanation=bindparam("b_explanation", type_=CONVERSATIONS.c.explanation.type),
                    last_position=None,
                ),
                self.assignments,
            )
        if self.offers:
            await connection.execute(
                update(CONVERSATIONS)
                .where(queued)
                .values(
                    state="offered",
                    agent_id=bindparam("b_agent"),
                    attempts=bindparam("b_attempts"),
                    explanation=bindparam("b_explanation", type_=CONVERSATIONS.c.explanation.type),
                    offer_id=bindparam("b_offer"),
                    offer_expires_at=bindparam(
                        "b_expires", type_=CONVERSATIONS.c.offer_expires_at.type
                    ),
                    last_position=None,
                ),
                self.offers,
            )
        ids = [row["b_id"] for row in (*self.assignments, *self.offers)]
        moved = await connection.scalar(
            select(func.count())
            .select_from(CONVERSATIONS)
            .where(
                CONVERSATIONS.c.conversation_id.in_(ids),
                CONVERSATIONS.c.state.in_(["assigned", "offered"]),
            )
        )
        if moved != len(ids):
            raise PlacementConflict(f"{len(ids) - moved} conversation(s) no longer queued")
        if self.customers:
            statement = _insert(connection, CUSTOMERS).values(
                tenant_id=tenant,
                customer_key=bindparam("b_key"),
                last_agent_id=bindparam("b_agent"),
                last_assigned_at=bindparam("b_at", type_=CUSTOMERS.c.last_assigned_at.type),
            )
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[CUSTOMERS.c.tenant_id, CUSTOMERS.c.customer_key],
                    set_={
                        "last_agent_id": statement.excluded.last_agent_id,
                        "last_assigned_at": statement.excluded.last_assigned_at,
                    },
                ),
                [
                    {"b_key": key, "b_agent": agent_id, "b_at": at}
                    for key, (agent_id, at) in self.customers.items()
                ],
            )
        for group, agent_id in self.round_robin.items():
            await set_round_robin_last(connection, tenant, group, agent_id)


# --- conversations --------------------------------------------------------------------------


async def conversation(
    connection: AsyncConnection, conversation_id: str, tenant_id: str | None = None
) -> Any:
    query = select(CONVERSATIONS).where(CONVERSATIONS.c.conversation_id == conversation_id)
    if tenant_id is not None:
        query = query.where(CONVERSATIONS.c.tenant_id == tenant_id)
    return (await connection.execute(query)).first()


async def insert_conversation(connection: AsyncConnection, **values: Any) -> bool:
    """Insert the conversation unless its id is known; True if inserted (one statement)."""
    result = await connection.execute(
        _insert(connection, CONVERSATIONS)
        .values(excluded=[], history=[], attempts=0, vip=False, **values)
        .on_conflict_do_nothing(index_elements=[CONVERSATIONS.c.conversation_id])
    )
    return result.rowcount == 1


async def claim(
    connection: AsyncConnection, conversation_id: str, expected: Sequence[str], **values: Any
) -> bool:
    """Update the conversation only if it is still in one of the `expected` states."""
    result = await connection.execute(
        update(CONVERSATIONS)
        .where(
            CONVERSATIONS.c.conversation_id == conversation_id,
            CONVERSATIONS.c.state.in_(list(expected)),
        )
        .values(**values)
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


async def queued(connection: AsyncConnection, tenant_id: str) -> list[Any]:
    return (
        await connection.execute(
            select(*(CONVERSATIONS.c[name] for name in QUEUE_COLUMNS)).where(
                CONVERSATIONS.c.tenant_id == tenant_id, CONVERSATIONS.c.state == "queued"
            )
        )
    ).all()


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


async def customer(connection: AsyncConnection, tenant_id: str, key: str) -> Any:
    return (
        await connection.execute(
            select(CUSTOMERS).where(
                CUSTOMERS.c.tenant_id == tenant_id, CUSTOMERS.c.customer_key == key
            )
        )
    ).first()


async def remember_customer(
    connection: AsyncConnection, tenant_id: str, key: str, **values: Any
) -> None:
    """Create the customer's row if missing, and set `values` on it (one statement)."""
    statement = _insert(connection, CUSTOMERS).values(
        tenant_id=tenant_id, customer_key=key, **values
    )
    keys = [CUSTOMERS.c.tenant_id, CUSTOMERS.c.customer_key]
    await connection.execute(
        statement.on_conflict_do_update(index_elements=keys, set_=values)
        if values
        else statement.on_conflict_do_nothing(index_elements=keys)
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
