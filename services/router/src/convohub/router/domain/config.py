"""The tenant's `routing:` section of convohub.yaml, validated (see example-config.yaml)."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from convohub.contracts.events.common import AgentTier, Channel, Priority

SUPERVISOR_GROUP = "supervisor"
"""The queue escalations and follow-ups go to; agents with this skill serve it."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Strategy(StrEnum):
    LEAST_BUSY = "least_busy"
    LONGEST_IDLE = "longest_idle"
    ROUND_ROBIN = "round_robin"


class OfferMode(StrEnum):
    AUTO_ACCEPT = "auto_accept"
    OFFER = "offer"


class WideningAction(StrEnum):
    LOWER_PROFICIENCY = "lower_proficiency"
    NEIGHBOURS = "neighbours"
    ANY_AGENT = "any_agent"


class Escalation(StrEnum):
    SENIOR_TIER = "senior_tier"
    SUPERVISOR_QUEUE = "supervisor_queue"


class SkillGroup(_Model):
    id: str = Field(min_length=1, pattern=r"^[a-z0-9_-]+$")
    name: str | None = None
    neighbours: tuple[str, ...] = ()
    min_proficiency: int = Field(default=1, ge=1, le=5)
    """Proficiency an agent needs at widening level 0."""


class RuleMatch(_Model):
    """What a rule looks at; every condition given must hold (keywords: any one of them)."""

    keywords: tuple[str, ...] = ()
    regex: str | None = None
    channels: tuple[Channel, ...] = ()
    ivr: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a valid regular expression: {error}") from None
        return value

    @model_validator(mode="after")
    def _something(self) -> RuleMatch:
        if not (self.keywords or self.regex or self.channels or self.ivr or self.segments):
            raise ValueError(
                "a rule needs at least one of keywords, regex, channels, ivr, segments"
            )
        return self


class Rule(_Model):
    id: str = Field(min_length=1)
    match: RuleMatch
    skill_group: str
    priority: Priority = Priority.P3
    escalate: Escalation | None = None
    """Complaint rules send the conversation to the senior tier or the supervisor queue."""


class WideningStep(_Model):
    after_seconds: int = Field(ge=0)
    action: WideningAction


class Capacity(_Model):
    per_channel: dict[Channel, int] = Field(
        default_factory=lambda: {Channel.WEB_CHAT: 3, Channel.EMAIL: 5, Channel.VOICE: 1}
    )
    total: int = Field(default=5, ge=1)

    @field_validator("per_channel")
    @classmethod
    def _non_negative(cls, value: dict[Channel, int]) -> dict[Channel, int]:
        for channel, limit in value.items():
            if limit < 0:
                raise ValueError(f"capacity of {channel} must be >= 0")
        return value


class AgentConfig(_Model):
    id: str = Field(min_length=1, max_length=128)
    name: str = ""
    tier: AgentTier = AgentTier.MID
    skills: dict[str, int] = Field(default_factory=dict)
    """Skill group -> proficiency 1-5."""
    capacity: Capacity = Field(default_factory=Capacity)

    @field_validator("skills")
    @classmethod
    def _proficiency(cls, value: dict[str, int]) -> dict[str, int]:
        for group, level in value.items():
            if not 1 <= level <= 5:
                raise ValueError(f"proficiency of {group} must be 1-5, got {level}")
        return value


class RoutingConfig(_Model):
    """One tenant's routing: groups, rules, strategy, offers, widening and the roster."""

    skill_groups: tuple[SkillGroup, ...] = (SkillGroup(id="general"),)
    default_skill_group: str = "general"
    default_priority: Priority = Priority.P3
    rules: tuple[Rule, ...] = ()
    complaint_keywords: tuple[str, ...] = ()
    """Words that raise a conversation's priority by one step, whatever rule matched."""
    vip_segments: tuple[str, ...] = ("vip",)
    vip_skill_group: str | None = None
    """VIP customers go to this group when set, else keep their group one priority higher."""
    strategy: Strategy = Strategy.LEAST_BUSY
    offer_mode: OfferMode = OfferMode.AUTO_ACCEPT
    offer_expiry_seconds: int = Field(default=30, ge=1)
    sticky_agent_seconds: int = Field(default=0, ge=0)
    """How long a returning customer waits for their previous agent; 0 turns it off."""
    sticky_memory_days: int = Field(default=30, ge=1)
    widening: tuple[WideningStep, ...] = ()
    aging_seconds_per_priority: int = Field(default=300, ge=1)
    """A waiting conversation gains one priority step per this many seconds (no starving)."""
    average_handle_seconds: int = Field(default=300, ge=1)
    heartbeat_timeout_seconds: int = Field(default=90, ge=1)
    agents: tuple[AgentConfig, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> RoutingConfig:
        groups = {group.id for group in self.skill_groups} | {SUPERVISOR_GROUP}
        problems: list[str] = []
        if self.default_skill_group not in groups:
            problems.append(
                f"default_skill_group {self.default_skill_group!r} is not a skill group"
            )
        if self.vip_skill_group and self.vip_skill_group not in groups:
            problems.append(f"vip_skill_group {self.vip_skill_group!r} is not a skill group")
        for group in self.skill_groups:
            for neighbour in group.neighbours:
                if neighbour not in groups:
                    problems.append(f"skill group {group.id!r}: unknown neighbour {neighbour!r}")
        for rule in self.rules:
            if rule.skill_group not in groups:
                problems.append(f"rule {rule.id!r}: unknown skill_group {rule.skill_group!r}")
        agent_ids = [agent.id for agent in self.agents]
        if len(agent_ids) != len(set(agent_ids)):
            problems.append("agent ids must be unique")
        rule_ids = [rule.id for rule in self.rules]
        if len(rule_ids) != len(set(rule_ids)):
            problems.append("rule ids must be unique")
        steps = [step.after_seconds for step in self.widening]
        if steps != sorted(steps):
            problems.append("widening steps must be in increasing after_seconds")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def group(self, group_id: str) -> SkillGroup:
        for group in self.skill_groups:
            if group.id == group_id:
                return group
        return SkillGroup(id=group_id)
