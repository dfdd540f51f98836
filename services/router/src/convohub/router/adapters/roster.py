"""Each tenant's agents as the last dispatch round left them, kept in memory between
transactions, so that a round on a floor of a thousand agents does not read a thousand
agents (and rebuild its index) for every batch.

The copy is a hint that the database checks: every transaction that changes an agent gives
it a new random version (`repository.changed_agents`); a round reads the tenant's versions
under the tenant's router lock and reads again only the agents whose version differs from
the copy's, or that the copy changed itself (its placements, which mark them stale first:
a rolled-back round leaves them to be read again). So the round decides on the committed
state, whatever another replica or process did; and capacity is still arbitrated by the
round's conditional writes (`repository.Placements`), not by this copy.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """One tenant's agents (`index`, for the dispatch round) and the version of each."""

    index: AgentIndex
    versions: dict[str, int | None]

    def update(self, agent: AgentState) -> None:
        """The round changed the agent (a placement): file it anew; read it again next time."""
        self.versions[agent.id] = STALE
        self.index.replace(agent)


class Rosters:
    """The tenants' rosters of one database."""

    def __init__(self) -> None:
        self._tenants: dict[str, TenantRoster] = {}

    async def current(
        self, connection: AsyncConnection, tenant_id: str, config: RoutingConfig
    ) -> TenantRoster:
        """The tenant's roster as committed (plus this transaction's changes); call it with
        the tenant's router lock held, and change agents only through `TenantRoster.update`
        until the transaction ends."""
        versions: dict[str, int | None] = dict(await repo.agent_versions(connection, tenant_id))
        roster = self._tenants.get(tenant_id)
        if roster is not None:
            changed = [
                agent_id
                for agent_id in versions.keys() | roster.index.agents.keys()
                if roster.versions.get(agent_id, STALE) != versions.get(agent_id)
            ]
            if len(changed) <= WHOLE_READ_ABOVE * len(roster.index.agents):
                for agent_id in changed:  # until the versions below are the copy's
                    roster.versions[agent_id] = STALE
                fresh = await repo.agent_states(connection, tenant_id, only=changed)
                if len(fresh) == len(changed):  # else an agent is gone: read everything
                    if roster.index.config is not config:
                        roster.index = AgentIndex(config, list(roster.index.agents.values()))
                    for agent in fresh:
                        roster.index.replace(agent)
                    roster.versions = {a: versions.get(a) for a in roster.index.agents}
                    return roster
        agents = await repo.agent_states(connection, tenant_id)
        roster = TenantRoster(
            AgentIndex(config, agents), {agent.id: versions.get(agent.id) for agent in agents}
        )
        self._tenants[tenant_id] = roster
        return roster


_ROSTERS: WeakKeyDictionary[Any, Rosters] = WeakKeyDictionary()


def rosters_of(store: Any) -> Rosters:
    """The rosters kept for `store` (a `ProjectionStore`; one per store object, dropped
    with it)."""
    rosters = _ROSTERS.get(store)
    if rosters is None:
        rosters = _ROSTERS[store] = Rosters()
    return rosters
