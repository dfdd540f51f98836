"""The `sla:` section of a tenant in `convohub.yaml`: business calendars, SLA policies with
their targets, warning thresholds and escalation ladders, and queue service levels; and the
rule that picks a conversation's policy for each clock.

Durations are seconds (`30`) or a number with a unit (`30s`, `15m`, `2h`, `2d`).

Matching: a policy matches a conversation when every criterion it names matches (an
absent or empty list matches anything). For each metric, of the matching policies that set
a target for it, the one with the tightest target applies (ties: the first in the file), so
every promise a matching policy makes is kept.
"""

from __future__ import annotations

import itertools
import re
from datetime import date, time
from functools import cached_property
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from convohub.contracts.events.common import Channel, Priority
from convohub.contracts.events.sla import SlaEscalationAction, SlaMetric
from convohub.sla.domain.calendar import ALWAYS_OPEN, BusinessCalendar, OpeningHours

__all__ = [
    "Calendar",
    "ConversationAttributes",
    "EscalationStep",
    "Policy",
    "PolicyMatch",
    "QueueServiceLevel",
    "SlaSection",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_duration(value: Any) -> Any:
    """`30`, `"30s"`, `"15m"`, `"2h"`, `"2d"` -> seconds; anything else is left to pydantic."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration; use seconds or 30s, 15m, 2h, 2d")
        return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


Seconds = Annotated[int, BeforeValidator(parse_duration), Field(ge=1)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _parse_hours(text: str) -> tuple[time, time | None]:
    match = _HOURS.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an opening interval; use HH:MM-HH:MM, e.g. 09:00-18:00")
    open_h, open_m, close_h, close_m = (int(part) for part in match.groups())
    if open_h > 23 or open_m > 59 or close_m > 59 or close_h > 24 or (close_h == 24 and close_m):
        raise ValueError(f"{text!r} has an impossible time of day")
    opens = time(open_h, open_m)
    closes = None if close_h == 24 else time(close_h, close_m)
    if closes is not None and closes <= opens:
        raise ValueError(f"{text!r} closes before it opens (split overnight hours over two days)")
    return opens, closes


class Calendar(_Section):
    """Business hours of a team: an IANA time zone, weekly hours and holidays."""

    id: str = Field(min_length=1, description="Name the policies refer to.")
    timezone: str = Field(description="IANA time zone, e.g. Europe/Berlin.")
    hours: dict[str, list[str]] = Field(
        description="Opening intervals per weekday (mon..sun), local time, e.g. "
        "{mon: ['09:00-12:00', '13:00-18:00']}; a missing day is closed; 24:00 is midnight."
    )
    holidays: list[date] = Field(default_factory=list, description="Closed local dates.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
        return value

    @field_validator("hours")
    @classmethod
    def _valid_hours(cls, hours: dict[str, list[str]]) -> dict[str, list[str]]:
        for day, intervals in hours.items():
            if day not in WEEKDAYS:
                raise ValueError(f"{day!r} is not a weekday; use {', '.join(WEEKDAYS)}")
            parsed = sorted(_parse_hours(text) for text in intervals)
            for (_, closes), (opens, _) in itertools.pairwise(parsed):
                if closes is None or closes > opens:
                    raise ValueError(f"the intervals of {day} overlap")
        if not any(hours.values()):
            raise ValueError("a calendar needs opening hours on at least one day")
        return hours

    def business_calendar(self) -> BusinessCalendar:
        weekly: list[OpeningHours] = []
        for day in WEEKDAYS:
            weekly.append(tuple(sorted(_parse_hours(text) for text in self.hours.get(day, []))))
        return BusinessCalendar(
            zone=ZoneInfo(self.timezone), weekly=tuple(weekly), holidays=frozenset(self.holidays)
        )


class PolicyMatch(_Section):
    """Which conversations a policy applies to; an absent or empty list matches anything."""

    priorities: list[Priority] = Field(default_factory=list)
    channels: list[Channel] = Field(default_factory=list)
    skill_groups: list[str] = Field(default_factory=list)
    segments: list[str] = Field(
        default_factory=list, description="Customer segments; any one of them is enough."
    )


class EscalationStep(_Section):
    """One rung of the ladder: at a share of the target, or a delay after the breach."""

    action: SlaEscalationAction
    at: float | None = Field(
        default=None, gt=0, description="Share of the target elapsed (0.9 = 90%)."
    )
    after_breach: Annotated[int, BeforeValidator(parse_duration), Field(ge=0)] | None = Field(
        default=None, description="Business time after the breach."
    )
    target_id: str | None = Field(
        default=None, min_length=1, description="Supervisor, manager or skill group to name."
    )
    metrics: list[SlaMetric] = Field(
        default_factory=list, description="Clocks the step applies to; all when empty."
    )

    @model_validator(mode="after")
    def _one_trigger(self) -> EscalationStep:
        if (self.at is None) == (self.after_breach is None):
            raise ValueError("give exactly one of `at` (share of target) or `after_breach`")
        return self

    def offset(self, target_seconds: int) -> float:
        """Business seconds after the clock's start at which the step is reached."""
        if self.at is not None:
            return target_seconds * self.at
        return float(target_seconds + (self.after_breach or 0))


class Policy(_Section):
    """Targets for the conversations a policy matches."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    match: PolicyMatch = Field(default_factory=PolicyMatch)
    first_response: Seconds | None = Field(default=None, description="Start to first agent reply.")
    next_response: Seconds | None = Field(
        default=None, description="Each customer message to the next agent reply."
    )
    resolution: Seconds | None = Field(default=None, description="Start to resolved.")
    warnings: list[float] = Field(
        default_factory=lambda: [0.75, 0.9],
        description="Warning thresholds as shares of the target, each in (0, 1).",
    )
    business_hours_only: bool = Field(
        default=False, description="Count only the calendar's opening hours."
    )
    calendar: str | None = Field(default=None, description="Calendar id (business hours).")
    pause_while_waiting_on_customer: bool = Field(
        default=True,
        description="The resolution clock stops while an agent's reply awaits the customer.",
    )
    escalations: list[EscalationStep] = Field(default_factory=list)

    @field_validator("warnings")
    @classmethod
    def _thresholds(cls, warnings: list[float]) -> list[float]:
        for threshold in warnings:
            if not 0 < threshold < 1:
                raise ValueError(f"warning threshold {threshold} must be between 0 and 1")
        percents = [round(threshold * 100) for threshold in warnings]
        if len(set(percents)) != len(percents) or 0 in percents or 100 in percents:
            raise ValueError("warning thresholds must be distinct whole percentages (1-99)")
        return sorted(warnings)

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.business_hours_only and self.calendar is None:
            raise ValueError("business_hours_only needs a `calendar`")
        if not (self.first_response or self.next_response or self.resolution):
            raise ValueError(
                "a policy needs at least one of first_response, next_response, resolution"
            )
        return self

    def target(self, metric: SlaMetric) -> int | None:
        return getattr(self, metric.value)  # type: ignore[no-any-return]

    def matches(self, attributes: ConversationAttributes) -> bool:
        rule = self.match
        return (
            (not rule.priorities or attributes.priority in rule.priorities)
            and (not rule.channels or attributes.channel in rule.channels)
            and (not rule.skill_groups or attributes.skill_group in rule.skill_groups)
            and (not rule.segments or bool(set(rule.segments) & set(attributes.segments)))
        )

    def steps_for(self, metric: SlaMetric) -> list[tuple[int, EscalationStep]]:
        """The ladder's steps that apply to `metric`, numbered from 1 as in the file."""
        return [
            (index, step)
            for index, step in enumerate(self.escalations, start=1)
            if not step.metrics or metric in step.metrics
        ]


class QueueServiceLevel(_Section):
    """A contact-centre promise: `target` of conversations answered within `threshold`."""

    skill_groups: list[str] = Field(default_factory=list, description="All when empty.")
    channels: list[Channel] = Field(default_factory=list, description="All when empty.")
    threshold: Seconds = Field(description="Answer-time threshold, e.g. 20s.")
    target: float | None = Field(default=None, ge=0, le=1, description="Target share, e.g. 0.8.")

    def applies_to(self, skill_group: str, channel: Channel) -> bool:
        return (not self.skill_groups or skill_group in self.skill_groups) and (
            not self.channels or channel in self.channels
        )


class ConversationAttributes(BaseModel):
    """What policies match on, as currently known about a conversation."""

    model_config = ConfigDict(frozen=True)

    channel: Channel | None = None
    priority: Priority | None = None
    skill_group: str | None = None
    segments: tuple[str, ...] = ()


class SlaSection(_Section):
    """A tenant's `sla:` section."""

    calendars: list[Calendar] = Field(default_factory=list)
    policies: list[Policy] = Field(default_factory=list)
    service_levels: list[QueueServiceLevel] = Field(default_factory=list)
    service_level_window: Seconds = Field(
        default=900, description="Length of a service-level measurement window."
    )

    @model_validator(mode="after")
    def _references(self) -> SlaSection:
        calendar_ids = [calendar.id for calendar in self.calendars]
        if len(set(calendar_ids)) != len(calendar_ids):
            raise ValueError("calendar ids must be unique")
        policy_ids = [policy.id for policy in self.policies]
        if len(set(policy_ids)) != len(policy_ids):
            raise ValueError("policy ids must be unique")
        for policy in self.policies:
            if policy.calendar is not None and policy.calendar not in calendar_ids:
                raise ValueError(
                    f"policy {policy.id!r} names an unknown calendar {policy.calendar!r}"
                )
        return self

    @cached_property
    def _calendars(self) -> dict[str, BusinessCalendar]:
        return {calendar.id: calendar.business_calendar() for calendar in self.calendars}

    def policy(self, policy_id: str) -> Policy | None:
        return next((policy for policy in self.policies if policy.id == policy_id), None)

    def calendar_of(self, policy: Policy | None) -> BusinessCalendar:
        """The calendar a policy's clocks count in (always open unless business hours only)."""
        if policy is None or not policy.business_hours_only or policy.calendar is None:
            return ALWAYS_OPEN
        return self._calendars[policy.calendar]

    def policy_for(self, attributes: ConversationAttributes, metric: SlaMetric) -> Policy | None:
        """The policy whose target applies to `metric`: the tightest of the matching ones."""
        best: Policy | None = None
        for policy in self.policies:
            target = policy.target(metric)
            if target is None or not policy.matches(attributes):
                continue
            if best is None or target < (best.target(metric) or 0):
                best = policy
        return best

    def service_level_for(self, skill_group: str, channel: Channel) -> QueueServiceLevel | None:
        return next(
            (level for level in self.service_levels if level.applies_to(skill_group, channel)),
            None,
        )
