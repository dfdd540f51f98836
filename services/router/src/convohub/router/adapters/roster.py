"""Each tenant's agents as the last dispatch round left them, kept in memory between
transactions, so that a round on a floor of a thousand agents does not read a thousand
agents (and rebuild its index) for every batch.

The copy is a hint that the database checks: every transaction that changes an agent gives
it, and the tenant's roster, new random versions (`repository.changed_agents`). A round,
under the tenant's router lock, reads the roster version: if it is the copy's (or the copy's
plus this transaction's own changes), only the agents this transaction changed and those the
copy changed itself are read again; otherwise the agents' versions are compared and the
agents whose version differs are. The copy marks what it changes itself (a round's
placements) stale until they are written, and then takes the versions they were written
with: a rolled-back round leaves them to be read again. So a round
decides on the committed state, whatever another replica or process did; and capacity is
still arbitrated by the round's conditional writes (`repository.Placements`), not by this
copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.router.adapters import repository as repo
from convohub.router.domain.assignment import AgentIndex, AgentState
from convohub.router.domain.config import RoutingConfig

STALE = -1
"""The version of an agent the copy changed itself (versions are never negative)."""
WHOLE_READ_ABOVE = 0.5
"""Above this share of the floor changed, the whole floor is read again (two statements)
rather than the changed agents by id."""


@dataclass
class TenantRoster:
    """One tenant's agents (`index`, for the dispatch round), the version of each, and the
    roster version they were read at."""

    index: AgentIndex
    versions: dict[str, int | None]
    version: int | None
    _idle_before: dict[str, datetime] = field(default_factory=dict)
    """The round's placed agents' `idle_since` before it (the round files them as idle since
    now, so that it spreads its own placements; the database keeps the time of release)."""

    def update(self, agent: AgentState) -> None:
        """The round placed a conversation with the agent: file it anew (stale until
        `placed`)."""
        self._idle_before.setdefault(agent.id, self.index.agents[agent.id].idle_since)
        self.versions[agent.id] = STALE
        self.index.replace(agent)

    def placed(self, connection: AsyncConnection, tenant_id: str) -> None:
        """The round's placements (every change since `Rosters.current`, all through `update`)
        are written: the copy is the roster as this transaction leaves it, at the versions it
        wrote (if it rolls back, they are not the database's, and the copy is read again)."""
        placed, self._idle_before = self._idle_before, {}
        changes = repo.transaction_changes(connection, tenant_id)
        if changes is None:
            return
        self.version = changes.written[-1]
        for agent_id, idle_since in placed.items():
            if agent_id in changes.agents:
                self.index.replace(replace(self.index.agents[agent_id], idle_since=idle_since))
                self.versions[agent_id] = changes.agents[agent_id]


class Rosters:
    """The tenants' rosters of one database."""

    def __init__(self) -> None:
        self._tenants: dict[str, TenantRoster] = {}

    async def current(
        self, connection: AsyncConnection, tenant_id: str, config: RoutingConfig
    ) -> TenantRoster:
        """The tenant's roster as committed, with this transaction's changes; call it with
        the tenant's router lock held, and change agents only through `TenantRoster.update`
        until `TenantRoster.placed`."""
        changes = repo.transaction_changes(connection, tenant_id)
        if changes is None:
            version = await repo.roster_version(connection, tenant_id)
            known, own = {version}, set()
        else:
            version = changes.written[-1]
            known, own = {changes.before, *changes.written}, set(changes.agents)
        roster = self._tenants.get(tenant_id)
        if roster is not None:
            roster._idle_before = {}
            if roster.version is not None and roster.version in known:
                changed = own | {a for a, v in roster.versions.items() if v == STALE}
            else:
                versions = await repo.agent_versions(connection, tenant_id)
                changed = {
                    agent_id
                    for agent_id in versions.keys() | roster.index.agents.keys()
                    if roster.versions.get(agent_id, STALE) != versions.get(agent_id)
                }
            if await self._read_again(connection, tenant_id, config, roster, changed):
                roster.version = version
                return roster
        read = await repo.versioned_agent_states(connection, tenant_id)
        roster = TenantRoster(
            AgentIndex(config, [agent for agent, _ in read]),
            {agent.id: agent_version for agent, agent_version in read},
            version,
        )
        self._tenants[tenant_id] = roster
        return roster

    @staticmethod
    async def _read_again(
        connection: AsyncConnection,
        tenant_id: str,
        config: RoutingConfig,
        roster: TenantRoster,
        changed: set[str],
    ) -> bool:
        """Read the `changed` agents into the copy; False if the whole floor is to be read
        instead (too many changed, or one is gone)."""
        if len(changed) > WHOLE_READ_ABOVE * len(roster.index.agents):
            return False
        for agent_id in changed:  # until read below
            roster.versions[agent_id] = STALE
        read = await repo.versioned_agent_states(connection, tenant_id, only=changed)
        if len(read) != len(changed):
            return False
        if roster.index.config is not config:
            roster.index = AgentIndex(config, list(roster.index.agents.values()))
        for agent, agent_version in read:
            roster.index.replace(agent)
            roster.versions[agent.id] = agent_version
        return True


_ROSTERS: WeakKeyDictionary[Any, Rosters] = WeakKeyDictionary()


def rosters_of(store: Any) -> Rosters:
    """The rosters kept for `store` (a `ProjectionStore`; one per store object, dropped
    with it)."""
    rosters = _ROSTERS.get(store)
    if rosters is None:
        rosters = _ROSTERS[store] = Rosters()
    return rosters
