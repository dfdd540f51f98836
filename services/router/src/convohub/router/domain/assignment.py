"""Assignment decisions: queue order, widening, eligibility and the strategies. Pure: the
caller passes the agents' state and the time; arbitration of capacity happens in the store."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from convohub.contracts.events.common import AgentTier, Channel, Priority
from convohub.contracts.events.routing import AssignmentStrategy
from convohub.router.domain.config import RoutingConfig, Strategy, WideningAction

EXPLAINED_CANDIDATES = 20
"""An explanation lists the chosen agent and the next candidates, not a whole floor."""
PRIORITY_RANK = {Priority.P1: 0, Priority.P2: 1, Priority.P3: 2, Priority.P4: 3}


@dataclass(frozen=True)
class AgentState:
    id: str
    tier: AgentTier
    skills: dict[str, int]
    online: bool
    load: int
    capacity: int
    channel_load: dict[str, int]
    channel_capacity: dict[str, int]
    idle_since: datetime

    def free_on(self, channel: Channel) -> bool:
        return self.load < self.capacity and self.channel_load.get(
            channel.value, 0
        ) < self.channel_capacity.get(channel.value, 0)


@dataclass(frozen=True)
class Waiting:
    """A queued conversation as the decision needs it."""

    conversation_id: str
    skill_group: str
    channel: Channel
    priority: Priority
    queued_at: datetime
    required_tier: AgentTier | None = None
    preferred_agent: str | None = None
    preferred_until: datetime | None = None
    excluded: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Candidate:
    agent_id: str
    eligible: bool
    load: int
    capacity: int
    proficiency: int | None
    idle_seconds: int
    rejected_because: str | None = None


@dataclass(frozen=True)
class Decision:
    agent_id: str | None
    strategy: AssignmentStrategy
    widening_level: int
    summary: str
    candidates: list[Candidate] = field(default_factory=list)


def queue_key(waiting: Waiting, now: datetime, aging_seconds: int) -> tuple[float, datetime, str]:
    """Sort key of a queue: priority first (aged by one step per `aging_seconds` waited, so
    nothing starves), then time waited, then id."""
    waited = max(0.0, (now - waiting.queued_at).total_seconds())
    return (
        PRIORITY_RANK[waiting.priority] - waited // aging_seconds,
        waiting.queued_at,
        waiting.conversation_id,
    )


def widening_level(config: RoutingConfig, waited_seconds: float) -> int:
    return sum(1 for step in config.widening if step.after_seconds <= waited_seconds)


def _pool(config: RoutingConfig, group: str, level: int) -> tuple[set[str] | None, int]:
    """Groups whose agents are eligible (None: any agent) and the proficiency needed."""
    actions = {step.action for step in config.widening[:level]}
    if WideningAction.ANY_AGENT in actions:
        return None, 1
    groups = {group}
    if WideningAction.NEIGHBOURS in actions:
        groups |= set(config.group(group).neighbours)
    needed = (
        1 if WideningAction.LOWER_PROFICIENCY in actions else config.group(group).min_proficiency
    )
    return groups, needed


def pool_proficiency(agent: AgentState, groups: set[str] | None, skill_group: str) -> int | None:
    """The agent's best proficiency among the pool's groups (None: no skill in the pool); with
    no pool limit (`any_agent`), its proficiency in the conversation's group or 1."""
    if groups is None:
        return agent.skills.get(skill_group) or 1
    levels = [agent.skills[g] for g in groups if g in agent.skills]
    return max(levels) if levels else None


def rank(config: RoutingConfig, agent: AgentState, proficiency: int) -> tuple[Any, ...]:
    """The strategy's order of eligible agents: the first one is chosen (round robin: by id,
    the turn is taken from the cursor on)."""
    if config.strategy is Strategy.LONGEST_IDLE:
        return (agent.idle_since, -proficiency, agent.id)
    if config.strategy is Strategy.ROUND_ROBIN:
        return (agent.id,)
    return (agent.load / agent.capacity, agent.load, -proficiency, agent.idle_since, agent.id)


def estimated_wait_seconds(position: int, agents_online: int, average_handle: int) -> int | None:
    if agents_online <= 0:
        return None
    return ((position - 1) // agents_online + 1) * average_handle if position > 0 else 0


def choose_agent(
    config: RoutingConfig,
    waiting: Waiting,
    agents: Sequence[AgentState],
    now: datetime,
    *,
    round_robin_after: str | None = None,
    eligible_count: int | None = None,
) -> Decision:
    """The agent to offer `waiting` to, or none, with every agent considered and why.

    `agents` may be a shortlist (`AgentIndex.shortlist`); `eligible_count` then gives the
    number of eligible agents on the whole floor for the summary."""
    waited = (now - waiting.queued_at).total_seconds()
    level = widening_level(config, waited)
    groups, needed = _pool(config, waiting.skill_group, level)
    considered: list[tuple[AgentState, int | None, str | None]] = []
    eligible: list[tuple[AgentState, int]] = []
    channel = waiting.channel.value
    for agent in agents:
        best = pool_proficiency(agent, groups, waiting.skill_group)
        reason: str | None = None
        if not agent.online:
            reason = "offline"
        elif best is None:
            reason = f"lacks skill {waiting.skill_group}"
        elif best < needed:
            reason = f"proficiency {best} < {needed}"
        elif waiting.required_tier is not None and agent.tier != waiting.required_tier:
            reason = f"tier {agent.tier} is not {waiting.required_tier}"
        elif agent.id in waiting.excluded:
            reason = "declined or let an offer expire"
        elif agent.load >= agent.capacity:
            reason = f"at capacity ({agent.load}/{agent.capacity} total)"
        elif agent.channel_load.get(channel, 0) >= agent.channel_capacity.get(channel, 0):
            reason = (
                f"at capacity ({agent.channel_load.get(channel, 0)}/"
                f"{agent.channel_capacity.get(channel, 0)} {channel})"
            )
        considered.append((agent, best, reason))
        if reason is None:
            eligible.append((agent, best or 1))

    def candidates(chosen: str | None, strategy: str) -> list[Candidate]:
        """The chosen agent, then the other eligible ones, then the rest, at most
        EXPLAINED_CANDIDATES (a floor of a thousand agents is not an explanation)."""
        ranked = sorted(considered, key=lambda c: (c[0].id != chosen, c[2] is not None, c[0].id))
        return [
            Candidate(
                agent.id,
                reason is None,
                agent.load,
                agent.channel_capacity.get(channel, 0),
                agent.skills.get(waiting.skill_group),
                max(0, int((now - agent.idle_since).total_seconds())),
                reason
                if reason is not None or agent.id == chosen or chosen is None
                else "not chosen by " + strategy,
            )
            for agent, _, reason in ranked[:EXPLAINED_CANDIDATES]
        ]

    by_id = {agent.id: agent for agent, _ in eligible}
    # The returning customer's previous agent first, while the sticky window lasts.
    if waiting.preferred_agent and waiting.preferred_until and now < waiting.preferred_until:
        if waiting.preferred_agent in by_id:
            return Decision(
                waiting.preferred_agent,
                AssignmentStrategy.PREVIOUS_AGENT,
                level,
                "the customer's previous agent",
                candidates(waiting.preferred_agent, "previous_agent"),
            )
        previous = next((a for a in agents if a.id == waiting.preferred_agent), None)
        if previous is not None and previous.online:
            return Decision(
                None,
                AssignmentStrategy.PREVIOUS_AGENT,
                level,
                "waiting for the customer's previous agent",
                candidates(None, "previous_agent"),
            )
    if not eligible:
        return Decision(
            None,
            AssignmentStrategy(config.strategy.value),
            level,
            f"no eligible agent for {waiting.skill_group}",
            candidates(None, config.strategy.value),
        )
    counted = len(eligible) if eligible_count is None else eligible_count
    if config.strategy is Strategy.LONGEST_IDLE:
        chosen = min(eligible, key=lambda pair: rank(config, pair[0], pair[1]))[0]
        summary = f"longest idle of {counted} eligible {waiting.skill_group} agents"
    elif config.strategy is Strategy.ROUND_ROBIN:
        ordered = sorted(by_id)
        later = [
            agent_id
            for agent_id in ordered
            if round_robin_after is None or agent_id > round_robin_after
        ]
        chosen = by_id[(later or ordered)[0]]
        summary = f"next in turn of {counted} eligible {waiting.skill_group} agents"
    else:
        chosen = min(eligible, key=lambda pair: rank(config, pair[0], pair[1]))[0]
        summary = (
            f"least busy of {counted} eligible {waiting.skill_group} agents "
            f"({chosen.load}/{chosen.capacity} open)"
        )
    if level:
        summary += f", widened to level {level}"
    strategy = AssignmentStrategy(config.strategy.value)
    return Decision(chosen.id, strategy, level, summary, candidates(chosen.id, strategy.value))


SHORTLIST_ABOVE = 64
"""Rosters up to this size are given to `choose_agent` whole (so explanations also list the
agents that are offline or lack the skill); larger ones go through `AgentIndex`."""


class AgentIndex:
    """The agents of one dispatch round, with one list per pool (groups, proficiency needed,
    channel) of the agents that could take a conversation, kept in the strategy's order.

    A decision on a floor of a thousand agents then looks at the first few agents of its pool
    instead of every agent, and a placement re-files one agent. `shortlist` gives
    `choose_agent` the agents that decide the outcome: the first EXPLAINED_CANDIDATES eligible
    ones in strategy order (from the round-robin cursor on), plus the preferred agent."""

    def __init__(self, config: RoutingConfig, agents: Sequence[AgentState]) -> None:
        self.config = config
        self.agents = {agent.id: agent for agent in agents}
        self._ordered: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        self._entries: dict[tuple[Any, ...], dict[str, tuple[Any, ...]]] = {}
        self._free: dict[Channel, int] = {}

    def free_on(self, channel: Channel) -> bool:
        """Is any agent online with room on the channel?"""
        if channel not in self._free:
            self._free[channel] = sum(
                1 for agent in self.agents.values() if agent.online and agent.free_on(channel)
            )
        return self._free[channel] > 0

    def replace(self, agent: AgentState) -> None:
        """The agent's new state (after a placement, or as read again); a new one is added."""
        previous = self.agents.get(agent.id)
        self.agents[agent.id] = agent
        for channel in self._free:
            was = previous is not None and previous.online and previous.free_on(channel)
            self._free[channel] += (agent.online and agent.free_on(channel)) - was
        for key, ordered in self._ordered.items():
            entries = self._entries[key]
            old = entries.pop(agent.id, None)
            if old is not None:
                del ordered[bisect_left(ordered, old)]
            entry = self._entry(key, agent)
            if entry is not None:
                insort(ordered, entry)
                entries[agent.id] = entry

    def shortlist(
        self, waiting: Waiting, now: datetime, *, round_robin_after: str | None = None
    ) -> tuple[list[AgentState], int | None]:
        """The agents to give `choose_agent` for `waiting`, and the number of eligible agents
        (None when the whole roster is given)."""
        if len(self.agents) <= SHORTLIST_ABOVE:
            return list(self.agents.values()), None
        level = widening_level(self.config, (now - waiting.queued_at).total_seconds())
        groups, needed = _pool(self.config, waiting.skill_group, level)
        key = (
            None if groups is None else frozenset(groups),
            needed,
            waiting.channel,
            waiting.skill_group,
        )
        ordered = self._pool_list(key)
        picked: list[AgentState] = []
        for agent_id in self._walk(ordered, round_robin_after):
            agent = self.agents[agent_id]
            if agent.id in waiting.excluded or (
                waiting.required_tier is not None and agent.tier != waiting.required_tier
            ):
                continue
            picked.append(agent)
            if len(picked) >= EXPLAINED_CANDIDATES:
                break
        entries = self._entries[key]
        if waiting.required_tier is None:
            eligible = len(ordered) - sum(1 for a in waiting.excluded if a in entries)
        else:
            eligible = sum(
                1
                for a in entries
                if a not in waiting.excluded and self.agents[a].tier == waiting.required_tier
            )
        preferred = self.agents.get(waiting.preferred_agent or "")
        if preferred is not None and all(a.id != preferred.id for a in picked):
            picked.append(preferred)
        return picked, eligible

    def _walk(self, ordered: list[tuple[Any, ...]], after: str | None) -> Iterator[str]:
        start = 0
        if self.config.strategy is Strategy.ROUND_ROBIN and after is not None:
            start = bisect_right(ordered, (after, after))
        for entry in ordered[start:]:
            yield entry[-1]
        for entry in ordered[:start]:
            yield entry[-1]

    def _pool_list(self, key: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if key not in self._ordered:
            entries = {}
            for agent in self.agents.values():
                entry = self._entry(key, agent)
                if entry is not None:
                    entries[agent.id] = entry
            self._entries[key] = entries
            self._ordered[key] = sorted(entries.values())
        return self._ordered[key]

    def _entry(self, key: tuple[Any, ...], agent: AgentState) -> tuple[Any, ...] | None:
        groups, needed, channel, skill_group = key
        if not agent.online or not agent.free_on(channel):
            return None
        best = pool_proficiency(agent, groups, skill_group)
        if best is None or best < needed:
            return None
        return (*rank(self.config, agent, best), agent.id)
