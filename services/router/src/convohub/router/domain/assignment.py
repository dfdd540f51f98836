"""Assignment decisions: queue order, widening, eligibility and the strategies. Pure: the
caller passes the agents' state and the time; arbitration of capacity happens in the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

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
) -> Decision:
    """The agent to offer `waiting` to, or none, with every agent considered and why."""
    waited = (now - waiting.queued_at).total_seconds()
    level = widening_level(config, waited)
    groups, needed = _pool(config, waiting.skill_group, level)
    considered: list[tuple[AgentState, int | None, str | None]] = []
    eligible: list[tuple[AgentState, int]] = []
    channel = waiting.channel.value
    for agent in agents:
        if groups is not None:
            levels = [agent.skills[g] for g in groups if g in agent.skills]
            best = max(levels) if levels else None
        else:
            best = agent.skills.get(waiting.skill_group) or 1
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
    if config.strategy is Strategy.LONGEST_IDLE:
        chosen = min(eligible, key=lambda pair: (pair[0].idle_since, -pair[1], pair[0].id))[0]
        summary = f"longest idle of {len(eligible)} eligible {waiting.skill_group} agents"
    elif config.strategy is Strategy.ROUND_ROBIN:
        ordered = sorted(by_id)
        later = [
            agent_id
            for agent_id in ordered
            if round_robin_after is None or agent_id > round_robin_after
        ]
        chosen = by_id[(later or ordered)[0]]
        summary = f"next in turn of {len(eligible)} eligible {waiting.skill_group} agents"
    else:
        chosen = min(
            eligible,
            key=lambda pair: (
                pair[0].load / pair[0].capacity,
                pair[0].load,
                -pair[1],
                pair[0].idle_since,
                pair[0].id,
            ),
        )[0]
        summary = (
            f"least busy of {len(eligible)} eligible {waiting.skill_group} agents "
            f"({chosen.load}/{chosen.capacity} open)"
        )
    if level:
        summary += f", widened to level {level}"
    strategy = AssignmentStrategy(config.strategy.value)
    return Decision(chosen.id, strategy, level, summary, candidates(chosen.id, strategy.value))
