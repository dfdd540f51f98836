"""Random sequences of arrivals, presence changes, offers, resolutions and redeliveries run
against the real workflow on SQLite, through two stores on one database (two router replicas,
each with its in-memory roster): no agent ever exceeds a capacity, an agent's load always
equals the conversations it holds, no conversation is assigned twice, and a replica's roster
never takes an agent for current that another transaction changed."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import select

from convohub.contracts.events.agent import Presence, PresenceChangeReason
from convohub.contracts.events.common import Channel
from convohub.contracts.events.routing import OfferDeclineReason
from convohub.router.adapters import repository as repo
from convohub.router.adapters.roster import STALE, rosters_of
from convohub.router.adapters.tables import AGENT_CHANNELS, AGENTS, CONVERSATIONS, METADATA
from convohub.router.domain import assignment
from convohub.router.domain.config import RoutingConfig
from convohub.router.handlers import CommandRefused, Workflow, run_command
from convohub.runtime.store import ProjectionStore, create_engine, migrate_runtime
from convohub.runtime.store.tables import OUTBOX

from .conftest import started

AGENT_IDS = ["a1", "a2", "a3"]
CHANNELS = [Channel.WEB_CHAT, Channel.EMAIL, Channel.VOICE]


def routing(mode: str, strategy: str) -> RoutingConfig:
    return RoutingConfig.model_validate(
        {
            "skill_groups": [{"id": "support", "neighbours": ["sales"]}, {"id": "sales"}],
            "default_skill_group": "support",
            "rules": [{"id": "sales", "match": {"keywords": ["price"]}, "skill_group": "sales"}],
            "strategy": strategy,
            "offer_mode": mode,
            "offer_expiry_seconds": 20,
            "sticky_agent_seconds": 30,
            "widening": [{"after_seconds": 40, "action": "neighbours"}],
            "agents": [
                {
                    "id": "a1",
                    "skills": {"support": 3},
                    "capacity": {
                        "per_channel": {"web_chat": 2, "email": 2, "voice": 1},
                        "total": 3,
                    },
                },
                {
                    "id": "a2",
                    "skills": {"support": 2, "sales": 4},
                    "capacity": {"per_channel": {"web_chat": 1, "voice": 1}, "total": 1},
                },
                {
                    "id": "a3",
                    "skills": {"sales": 2},
                    "capacity": {"per_channel": {"web_chat": 3, "email": 1}, "total": 2},
                },
            ],
        }
    )


WHOLE_FLOOR_UP_TO = assignment.SHORTLIST_ABOVE


class RoutingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = tempfile.TemporaryDirectory()
        url = f"sqlite+aiosqlite:///{Path(self.folder.name) / 'r.db'}"
        self.store = ProjectionStore(create_engine(url))
        self.replicas = [self.store, ProjectionStore(create_engine(url))]
        self.run(migrate_runtime(self.store.engine))
        self.run(self._create())
        self.now = datetime(2026, 1, 5, 9, tzinfo=UTC)
        self.conversations: dict[str, tuple[str, Channel, str]] = {}
        self.configs: dict[str, RoutingConfig] = {}

    async def _create(self) -> None:
        async with self.store.engine.begin() as connection:
            await connection.run_sync(METADATA.create_all)

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def command(self, action: Any) -> Any:
        try:
            return self.run(run_command(self.replicas[0], self.configs, self.now, action))
        except CommandRefused:
            return None

    def teardown(self) -> None:
        assignment.SHORTLIST_ABOVE = WHOLE_FLOOR_UP_TO
        for store in self.replicas:
            self.run(store.engine.dispose())
        self.loop.close()
        self.folder.cleanup()

    @initialize(
        mode=st.sampled_from(["auto_accept", "offer"]),
        strategy=st.sampled_from(["least_busy", "longest_idle", "round_robin"]),
        indexed=st.booleans(),
    )
    def setup(self, mode: str, strategy: str, indexed: bool) -> None:
        self.configs["acme"] = routing(mode, strategy)
        if indexed:  # decide through the agent index, as on floors of more than 64 agents
            assignment.SHORTLIST_ABOVE = 0

        async def roster(work: Workflow) -> None:
            for agent in self.configs["acme"].agents:
                await repo.upsert_agent(
                    work.connection,
                    "acme",
                    agent.id,
                    name=agent.id,
                    tier=agent.tier,
                    skills=dict(agent.skills),
                    capacity_total=agent.capacity.total,
                    per_channel={c.value: n for c, n in agent.capacity.per_channel.items()},
                    now=work.now,
                )

        self.command(roster)

    @rule(agent=st.sampled_from(AGENT_IDS), presence=st.sampled_from(list(Presence)))
    def presence(self, agent: str, presence: Presence) -> None:
        self.now += timedelta(seconds=1)
        self.command(
            lambda w: w.presence(
                "acme", agent, presence, PresenceChangeReason.MANUAL, agent, publish=True
            )
        )

    @rule(
        channel=st.sampled_from(CHANNELS),
        customer=st.integers(0, 4),
        text=st.sampled_from(["hi", "price?"]),
    )
    def arrive(self, channel: Channel, customer: int, text: str) -> None:
        conversation = f"c{len(self.conversations)}"
        self.conversations[conversation] = (f"+{customer}", channel, text)
        self._deliver(conversation)

    @rule()
    def other_replica(self) -> None:
        """The following commands run on the other replica (the other store)."""
        self.replicas.reverse()

    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        if self.conversations:
            self._deliver(data.draw(st.sampled_from(sorted(self.conversations))))

    def _deliver(self, conversation: str) -> None:
        address, channel, text = self.conversations[conversation]
        event = started(conversation, address, channel.value).data

        async def deliver(work: Workflow) -> None:
            await work.conversation_started("acme", event)
            await work.contact("acme", conversation, channel, text=text)

        self.command(deliver)

    @rule(data=st.data())
    def resolve(self, data: st.DataObject) -> None:
        if self.conversations:
            conversation = data.draw(st.sampled_from(sorted(self.conversations)))
            self.command(lambda w: w.finished("acme", conversation))

    @rule(data=st.data(), accept=st.booleans())
    def answer_offer(self, data: st.DataObject, accept: bool) -> None:
        offers = self.run(self._offers())
        if not offers:
            return
        offer_id, agent_id = data.draw(st.sampled_from(offers))
        if accept:
            self.command(lambda w: w.accept("acme", offer_id, agent_id))
        else:
            self.command(lambda w: w.decline("acme", offer_id, agent_id, OfferDeclineReason.BUSY))

    @rule(seconds=st.integers(1, 60))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

        async def sweep(work: Workflow) -> None:
            await work.expire_offers("acme")
            work.dirty.add("acme")

        self.command(sweep)

    async def _offers(self) -> list[tuple[str, str]]:
        async with self.store.engine.connect() as connection:
            rows = await connection.execute(
                select(CONVERSATIONS.c.offer_id, CONVERSATIONS.c.agent_id).where(
                    CONVERSATIONS.c.state == "offered"
                )
            )
            return sorted((row.offer_id, row.agent_id) for row in rows)

    async def _snapshot(self) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        async with self.store.engine.connect() as connection:
            agents = (await connection.execute(select(AGENTS))).all()
            channels = (await connection.execute(select(AGENT_CHANNELS))).all()
            conversations = (await connection.execute(select(CONVERSATIONS))).all()
            outbox = (await connection.execute(select(OUTBOX.c.value))).all()
            return agents, channels, conversations, outbox

    async def _rosters_checked(self) -> None:
        for store in self.replicas:
            roster = rosters_of(store)._tenants.get("acme")
            if roster is None:
                continue
            async with store.engine.connect() as connection:
                version = await repo.roster_version(connection, "acme")
                versions = await repo.agent_versions(connection, "acme")
                agents = {a.id: a for a in await repo.agent_states(connection, "acme")}
            for agent_id, copy in roster.index.agents.items():
                mine = roster.versions.get(agent_id)
                if mine == versions.get(agent_id) or (
                    version is not None and roster.version == version and mine != STALE
                ):
                    assert copy == agents[agent_id], (copy, agents[agent_id])

    @invariant()
    def rosters_taken_for_current_are_current(self) -> None:
        if self.configs:
            self.run(self._rosters_checked())

    @invariant()
    def capacity_holds_and_nothing_is_assigned_twice(self) -> None:
        if not self.configs:
            return
        agents, channels, conversations, outbox = self.run(self._snapshot())
        holding = [c for c in conversations if c.state in ("offered", "assigned")]
        for agent in agents:
            mine = [c for c in holding if c.agent_id == agent.agent_id]
            assert 0 <= agent.load <= agent.capacity
            assert agent.load == len(mine)
        for channel in channels:
            mine = [
                c
                for c in holding
                if c.agent_id == channel.agent_id and c.channel == channel.channel
            ]
            assert 0 <= channel.load <= channel.capacity
            assert channel.load == len(mine)
        events = [json.loads(row.value) for row in outbox]
        assigned = Counter(
            e["data"]["conversation_id"]
            for e in events
            if e["type"] == "convohub.routing.assigned.v1"
        )
        assert all(count == 1 for count in assigned.values()), assigned
        classified = Counter(
            e["data"]["conversation_id"]
            for e in events
            if e["type"] == "convohub.routing.classified.v1"
        )
        assert all(count == 1 for count in classified.values()), classified
        for conversation in conversations:
            if conversation.state == "assigned":
                assert assigned[conversation.conversation_id] == 1


RoutingMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRouting = RoutingMachine.TestCase
