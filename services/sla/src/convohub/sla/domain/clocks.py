"""A conversation's SLA clocks as a pure fold over what happened in it.

`ConversationSla.apply(fact, section)` moves the clocks and returns the changes (clock
started, paused, resumed, met, stopped, retargeted) for the handler to publish and persist.
Replaying the same facts with another policy set gives the clocks that policy set would
have produced (`recompute`), which is how a policy change reaches open conversations.

Clocks:
- first response: from the start to the first agent reply (or the agent answering a call);
- next response: from each customer message that follows an agent reply, to the next
  agent reply;
- resolution: from the start (or a reopening) to resolved; paused while an agent's reply
  awaits the customer when the policy says so.

A clock counts business time in its policy's calendar; its timers (warnings, breach,
escalation steps) are offsets in business seconds from the clock's start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from convohub.contracts.events.common import Channel, Priority
from convohub.contracts.events.sla import SlaEscalationAction, SlaMetric, SlaPauseReason
from convohub.sla.domain.calendar import ZERO, BusinessCalendar
from convohub.sla.domain.policies import ConversationAttributes, Policy, SlaSection

__all__ = [
    "ChangeKind",
    "Clock",
    "ClockChange",
    "ClockState",
    "ConversationSla",
    "Fact",
    "FactKind",
    "PlannedTimer",
    "TimerKind",
    "planned_timers",
]


class ClockState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"
    STOPPED = "stopped"


class FactKind(StrEnum):
    """What the SLA service needs to know of a conversation's events."""

    STARTED = "started"
    CUSTOMER_MESSAGE = "customer_message"
    AGENT_REPLY = "agent_reply"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    CLOSED = "closed"
    CLASSIFIED = "classified"
    PRIORITY_CHANGED = "priority_changed"
    SKILL_GROUP_CHANGED = "skill_group_changed"
    SEGMENTS_CHANGED = "segments_changed"


class Fact(BaseModel):
    """One event, reduced to what the clocks depend on (no personal data)."""

    model_config = ConfigDict(frozen=True)

    kind: FactKind
    at: datetime
    event_id: str
    channel: Channel | None = None
    priority: Priority | None = None
    skill_group: str | None = None
    segments: tuple[str, ...] | None = None
    message_id: str | None = None


class Clock(BaseModel):
    """One SLA clock of a conversation."""

    clock_id: str
    metric: SlaMetric
    cycle: int
    policy_id: str
    target_seconds: int
    state: ClockState
    started_at: datetime
    counted: timedelta = ZERO
    """Business time counted before `running_since` (earlier running stretches)."""
    running_since: datetime | None = None
    due_at: datetime
    """When the target is (or was) breached while the clock keeps running."""
    ended_at: datetime | None = None
    pause_reason: SlaPauseReason | None = None
    cause_event_id: str
    """The event that started the clock: the cause of its timers' events."""

    def elapsed(self, now: datetime, calendar: BusinessCalendar) -> timedelta:
        """Business time counted up to `now` (up to the end for a met or stopped clock)."""
        if self.running_since is None:
            return self.counted
        return self.counted + calendar.elapsed(self.running_since, now)

    def remaining(self, now: datetime, calendar: BusinessCalendar) -> timedelta:
        return timedelta(seconds=self.target_seconds) - self.elapsed(now, calendar)

    @property
    def open(self) -> bool:
        return self.state in (ClockState.RUNNING, ClockState.PAUSED)


class ChangeKind(StrEnum):
    STARTED = "started"
    PAUSED = "paused"
    RESUMED = "resumed"
    MET = "met"
    STOPPED = "stopped"
    RETARGETED = "retargeted"
    """The policy or target changed (new facts matched another policy)."""


@dataclass(frozen=True)
class ClockChange:
    kind: ChangeKind
    clock: Clock
    at: datetime


class TimerKind(StrEnum):
    WARNING = "warning"
    BREACH = "breach"
    ESCALATION = "escalation"


@dataclass(frozen=True)
class PlannedTimer:
    """A moment a running clock will reach: a warning, its breach, or an escalation step."""

    key: str
    """Unique per clock (`warning-75`, `breach`, `escalation-2`): a fired key never fires
    again, whatever the clock does afterwards."""
    kind: TimerKind
    offset: timedelta
    """Business time after the clock's start."""
    due_at: datetime
    threshold_percent: int | None = None
    step: int | None = None
    action: SlaEscalationAction | None = None
    target_id: str | None = None


def planned_timers(
    clock: Clock, policy: Policy | None, calendar: BusinessCalendar
) -> list[PlannedTimer]:
    """The timers of a running clock with their due times (none for other states). A timer
    whose offset has passed already is due at once (`running_since`)."""
    if clock.state is not ClockState.RUNNING or clock.running_since is None:
        return []
    target = clock.target_seconds
    planned: list[tuple[str, TimerKind, float, dict[str, object]]] = []
    for threshold in policy.warnings if policy else (0.75, 0.9):
        percent = round(threshold * 100)
        planned.append(
            (
                f"warning-{percent}",
                TimerKind.WARNING,
                target * threshold,
                {"threshold_percent": percent},
            )
        )
    planned.append(("breach", TimerKind.BREACH, float(target), {}))
    if policy is not None:
        for number, step in policy.steps_for(clock.metric):
            planned.append(
                (
                    f"escalation-{number}",
                    TimerKind.ESCALATION,
                    step.offset(target),
                    {"step": number, "action": step.action, "target_id": step.target_id},
                )
            )
    timers = []
    for key, kind, offset_seconds, extra in planned:
        offset = timedelta(seconds=offset_seconds)
        still = offset - clock.counted
        due = (
            clock.running_since if still <= ZERO else calendar.deadline(clock.running_since, still)
        )
        timers.append(PlannedTimer(key=key, kind=kind, offset=offset, due_at=due, **extra))  # type: ignore[arg-type]
    return timers


class ConversationSla(BaseModel):
    """Everything the SLA service keeps about one conversation: its attributes, the facts
    seen (for recomputation), and its current clock of each metric."""

    tenant_id: str
    conversation_id: str
    channel: Channel | None = None
    priority: Priority | None = None
    skill_group: str | None = None
    segments: tuple[str, ...] = ()
    started: bool = False
    open: bool = True
    replied: bool = False
    """An agent has replied since the last customer message."""
    first_response_met: bool = False
    resolved: bool = False
    started_at: datetime | None = None
    started_by: str | None = None
    resolution_since: datetime | None = None
    """When the current resolution cycle began (the start or the last reopening)."""
    resolution_cause: str | None = None
    resolution_cycle: int = 0
    next_response_cycle: int = 0
    clocks: dict[SlaMetric, Clock] = Field(default_factory=dict)
    facts: list[Fact] = Field(default_factory=list)

    @property
    def attributes(self) -> ConversationAttributes:
        return ConversationAttributes(
            channel=self.channel,
            priority=self.priority,
            skill_group=self.skill_group,
            segments=self.segments,
        )

    # -- folding -------------------------------------------------------------------------------

    def apply(self, fact: Fact, section: SlaSection) -> list[ClockChange]:
        """Record `fact` and move the clocks; the changes it caused, in order."""
        if any(seen.event_id == fact.event_id for seen in self.facts):
            return []  # the same event twice changes nothing
        self.facts.append(fact)
        changes = self._fold(fact, section)
        for change in changes:
            self.refresh_due(change.clock, section)
        return changes

    @classmethod
    def recompute(
        cls, tenant_id: str, conversation_id: str, facts: list[Fact], section: SlaSection
    ) -> ConversationSla:
        """The state the facts give under `section`'s policies (after a policy change)."""
        state = cls(tenant_id=tenant_id, conversation_id=conversation_id)
        for fact in sorted(facts, key=lambda fact: fact.at):
            state.apply(fact, section)
        return state

    def _fold(self, fact: Fact, section: SlaSection) -> list[ClockChange]:
        changes: list[ClockChange] = []
        at = fact.at
        kind = fact.kind
        if kind is FactKind.STARTED:
            if self.started:
                return []
            self.started = True
            self.channel = fact.channel or self.channel
            self.started_at = self.resolution_since = fact.at
            self.started_by = self.resolution_cause = fact.event_id
            changes += self._start(SlaMetric.FIRST_RESPONSE, 0, fact, section)
            changes += self._start(SlaMetric.RESOLUTION, 0, fact, section)
        elif kind is FactKind.CUSTOMER_MESSAGE:
            if not self.started:  # a message before any start: the conversation starts now
                changes += self._fold(fact.model_copy(update={"kind": FactKind.STARTED}), section)
            changes += self._resume(SlaMetric.RESOLUTION, at)
            if self.replied and self.open:
                self.replied = False
                current = self.clocks.get(SlaMetric.NEXT_RESPONSE)
                if current is None or not current.open:
                    self.next_response_cycle += 1
                    changes += self._start(
                        SlaMetric.NEXT_RESPONSE, self.next_response_cycle, fact, section
                    )
        elif kind is FactKind.AGENT_REPLY:
            self.replied = True
            self.first_response_met = True
            changes += self._end(SlaMetric.FIRST_RESPONSE, at, ClockState.MET, section)
            changes += self._end(SlaMetric.NEXT_RESPONSE, at, ClockState.MET, section)
            resolution = self.clocks.get(SlaMetric.RESOLUTION)
            policy = section.policy(resolution.policy_id) if resolution else None
            if policy is not None and policy.pause_while_waiting_on_customer:
                changes += self._pause(
                    SlaMetric.RESOLUTION, at, SlaPauseReason.WAITING_ON_CUSTOMER, section
                )
        elif kind is FactKind.RESOLVED:
            self.resolved = True
            changes += self._end(SlaMetric.RESOLUTION, at, ClockState.MET, section)
            changes += self._end(SlaMetric.FIRST_RESPONSE, at, ClockState.STOPPED, section)
            changes += self._end(SlaMetric.NEXT_RESPONSE, at, ClockState.STOPPED, section)
        elif kind is FactKind.REOPENED:
            self.resolved = False
            self.resolution_since, self.resolution_cause = at, fact.event_id
            resolution = self.clocks.get(SlaMetric.RESOLUTION)
            if resolution is None or not resolution.open:
                self.resolution_cycle += 1
                changes += self._start(SlaMetric.RESOLUTION, self.resolution_cycle, fact, section)
        elif kind is FactKind.CLOSED:
            self.open = False
            for metric in list(self.clocks):
                changes += self._end(metric, at, ClockState.STOPPED, section)
        else:
            if fact.channel is not None:
                self.channel = fact.channel
            if fact.priority is not None:
                self.priority = fact.priority
            if fact.skill_group is not None:
                self.skill_group = fact.skill_group
            if fact.segments is not None:
                self.segments = tuple(sorted(set(fact.segments)))
            changes += self._rematch(at, section)
        return changes

    # -- clock moves ---------------------------------------------------------------------------

    def _clock_id(self, metric: SlaMetric, cycle: int) -> str:
        return f"{self.tenant_id}|{self.conversation_id}|{metric.value}|{cycle}"

    def _start(
        self, metric: SlaMetric, cycle: int, fact: Fact, section: SlaSection
    ) -> list[ClockChange]:
        return self._start_at(metric, cycle, fact.at, fact.event_id, section)

    def _start_at(
        self, metric: SlaMetric, cycle: int, at: datetime, cause: str, section: SlaSection
    ) -> list[ClockChange]:
        if not self.open:
            return []
        policy = section.policy_for(self.attributes, metric)
        if policy is None:
            return []
        target = policy.target(metric) or 0
        calendar = section.calendar_of(policy)
        clock = Clock(
            clock_id=self._clock_id(metric, cycle),
            metric=metric,
            cycle=cycle,
            policy_id=policy.id,
            target_seconds=target,
            state=ClockState.RUNNING,
            started_at=at,
            running_since=at,
            due_at=calendar.deadline(at, timedelta(seconds=target)),
            cause_event_id=cause,
        )
        self.clocks[metric] = clock
        return [ClockChange(ChangeKind.STARTED, clock, at)]

    def _end(
        self, metric: SlaMetric, at: datetime, state: ClockState, section: SlaSection
    ) -> list[ClockChange]:
        clock = self.clocks.get(metric)
        if clock is None or not clock.open:
            return []
        calendar = section.calendar_of(section.policy(clock.policy_id))
        clock.counted = clock.elapsed(at, calendar)
        clock.running_since = None
        clock.state = state
        clock.ended_at = at
        clock.pause_reason = None
        kind = ChangeKind.MET if state is ClockState.MET else ChangeKind.STOPPED
        return [ClockChange(kind, clock, at)]

    def _pause(
        self, metric: SlaMetric, at: datetime, reason: SlaPauseReason, section: SlaSection
    ) -> list[ClockChange]:
        clock = self.clocks.get(metric)
        if clock is None or clock.state is not ClockState.RUNNING or clock.running_since is None:
            return []
        calendar = section.calendar_of(section.policy(clock.policy_id))
        clock.counted = clock.elapsed(at, calendar)
        clock.running_since = None
        clock.state = ClockState.PAUSED
        clock.pause_reason = reason
        return [ClockChange(ChangeKind.PAUSED, clock, at)]

    def _resume(self, metric: SlaMetric, at: datetime) -> list[ClockChange]:
        clock = self.clocks.get(metric)
        if clock is None or clock.state is not ClockState.PAUSED:
            return []
        clock.state = ClockState.RUNNING
        clock.running_since = at
        clock.pause_reason = None
        return [ClockChange(ChangeKind.RESUMED, clock, at)]

    def _rematch(self, at: datetime, section: SlaSection) -> list[ClockChange]:
        changes = self._start_missing(section)
        for metric, clock in self.clocks.items():
            if not clock.open:
                continue
            policy = section.policy_for(self.attributes, metric)
            if policy is None:
                continue  # no policy matches any more: the clock keeps its promise
            target = policy.target(metric) or clock.target_seconds
            if policy.id == clock.policy_id and target == clock.target_seconds:
                continue
            if clock.running_since is not None:  # settle what the old calendar counted
                # facts of other topics can carry an earlier time than the clock's start
                moment = max(at, clock.running_since)
                clock.counted = clock.elapsed(
                    moment, section.calendar_of(section.policy(clock.policy_id))
                )
                clock.running_since = moment
            clock.policy_id = policy.id
            clock.target_seconds = target
            changes.append(ClockChange(ChangeKind.RETARGETED, clock, at))
        return changes

    def _start_missing(self, section: SlaSection) -> list[ClockChange]:
        """Clocks a policy now covers that none covered when they would have started (the
        priority is often known only after the start): they start retroactively."""
        if not self.started or not self.open:
            return []
        changes = []
        if (
            SlaMetric.FIRST_RESPONSE not in self.clocks
            and not self.first_response_met
            and self.started_at is not None
        ):
            changes += self._start_at(
                SlaMetric.FIRST_RESPONSE, 0, self.started_at, self.started_by or "", section
            )
        resolution = self.clocks.get(SlaMetric.RESOLUTION)
        if (
            not self.resolved
            and self.resolution_since is not None
            and (resolution is None or resolution.cycle != self.resolution_cycle)
        ):
            changes += self._start_at(
                SlaMetric.RESOLUTION,
                self.resolution_cycle,
                self.resolution_since,
                self.resolution_cause or "",
                section,
            )
        return changes

    def refresh_due(self, clock: Clock, section: SlaSection) -> None:
        """Recompute a running clock's due time from what it has counted."""
        if clock.state is not ClockState.RUNNING or clock.running_since is None:
            return
        left = timedelta(seconds=clock.target_seconds) - clock.counted
        if left > ZERO:
            calendar = section.calendar_of(section.policy(clock.policy_id))
            clock.due_at = calendar.deadline(clock.running_since, left)
