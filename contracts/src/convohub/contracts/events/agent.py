"""Agent events: registration, routing profile (skills, tier, capacity) and presence.

Carried on `convohub.agent.v1`, keyed by agent id. Ingest produces them from the agent
desktop and the admin API; the router produces presence changes when heartbeats time out.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, Field, field_validator

from convohub.contracts.events.common import AgentTier, Channel
from convohub.contracts.payload import EventPayload, ValueObject, event, personal
from convohub.contracts.topics import AGENT


class Presence(StrEnum):
    """Whether an agent can be offered conversations."""

    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


class PresenceChangeReason(StrEnum):
    """Why an agent's presence changed."""

    MANUAL = "manual"
    LOGIN = "login"
    LOGOUT = "logout"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    SUPERVISOR_OVERRIDE = "supervisor_override"


class AgentSkill(ValueObject):
    """One skill group an agent serves and how well."""

    skill_group: str = Field(
        description="Skill group (queue) the agent serves, as configured in convohub.yaml.",
        examples=["billing"],
    )
    proficiency: int = Field(
        ge=1,
        le=5,
        description="Proficiency from 1 (novice) to 5 (expert); the router prefers higher.",
        examples=[4],
    )


class AgentChannelCapacity(ValueObject):
    """How many conversations of one channel kind an agent handles at once."""

    channel: Channel = Field(description="Channel kind the limit applies to.")
    max_concurrent: int = Field(
        ge=0,
        description="Most open conversations of this channel kind at once; 0 means none.",
        examples=[3],
    )


class AgentCapacity(ValueObject):
    """How much concurrent work an agent takes: per channel kind and in total."""

    per_channel: list[AgentChannelCapacity] = Field(
        description="One limit per channel kind, each kind at most once. A channel kind not "
        "listed is never offered to the agent."
    )
    total: int = Field(
        ge=1,
        description="Most open conversations at once across all channels, a cap on top of "
        "the per-channel limits.",
        examples=[5],
    )

    @field_validator("per_channel")
    @classmethod
    def _each_channel_once(cls, value: list[AgentChannelCapacity]) -> list[AgentChannelCapacity]:
        channels = [entry.channel for entry in value]
        if len(channels) != len(set(channels)):
            raise ValueError("each channel kind may be listed only once")
        return value


def skill_groups_listed_once(skills: list[AgentSkill]) -> list[AgentSkill]:
    """The skills unchanged; ValueError if a skill group appears twice."""
    groups = [skill.skill_group for skill in skills]
    if len(groups) != len(set(groups)):
        raise ValueError("each skill group may be listed only once")
    return skills


@event("convohub.agent.registered.v1", topic=AGENT)
class AgentRegistered(EventPayload):
    """An agent was created through the admin API and can log in; the agent starts offline.

    Ingest produces it once per agent, with the agent's first routing profile.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "agent_id": "agent-42",
                    "display_name": "Li Wei 李伟",
                    "email": "li.wei@acme.example.com",
                    "tier": "mid",
                    "skills": [
                        {"skill_group": "billing", "proficiency": 4},
                        {"skill_group": "shipping", "proficiency": 2},
                    ],
                    "capacity": {
                        "per_channel": [
                            {"channel": "web_chat", "max_concurrent": 3},
                            {"channel": "whatsapp", "max_concurrent": 3},
                            {"channel": "email", "max_concurrent": 5},
                            {"channel": "voice", "max_concurrent": 1},
                        ],
                        "total": 5,
                    },
                    "registered_at": "2026-11-20T02:30:00Z",
                    "supervisor_id": "agent-7",
                }
            ]
        }
    )

    agent_id: str = Field(description="Agent id, the partition key.", examples=["agent-42"])
    display_name: str = personal(
        "The agent's name as shown to colleagues and customers.", examples=["Li Wei 李伟"]
    )
    email: str | None = personal(
        "The agent's work e-mail address, if recorded.",
        default=None,
        examples=["li.wei@acme.example.com"],
    )
    tier: AgentTier = Field(description="Seniority; escalations go to the senior tier.")
    skills: list[AgentSkill] = Field(
        description="Skill groups the agent serves, each at most once.",
    )
    capacity: AgentCapacity = Field(description="How many conversations the agent takes at once.")
    registered_at: datetime = Field(description="When the agent was created.")
    supervisor_id: str | None = Field(
        default=None,
        description="Agent id of the agent's supervisor, if any.",
        examples=["agent-7"],
    )

    @field_validator("skills")
    @classmethod
    def _each_skill_group_once(cls, value: list[AgentSkill]) -> list[AgentSkill]:
        return skill_groups_listed_once(value)


@event("convohub.agent.profile_changed.v1", topic=AGENT)
class AgentProfileChanged(EventPayload):
    """An agent's routing profile (skills, tier or capacity) was changed.

    Ingest produces it from the admin API or the agent desktop. It carries the complete new
    profile, replacing the previous one, so a consumer needs only the latest.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "agent_id": "agent-42",
                    "skills": [
                        {"skill_group": "billing", "proficiency": 5},
                        {"skill_group": "shipping", "proficiency": 3},
                        {"skill_group": "vip", "proficiency": 3},
                    ],
                    "tier": "senior",
                    "capacity": {
                        "per_channel": [
                            {"channel": "web_chat", "max_concurrent": 4},
                            {"channel": "whatsapp", "max_concurrent": 4},
                            {"channel": "email", "max_concurrent": 6},
                            {"channel": "voice", "max_concurrent": 1},
                        ],
                        "total": 6,
                    },
                    "changed_by": "agent-7",
                    "changed_at": "2026-11-23T01:15:00Z",
                }
            ]
        }
    )

    agent_id: str = Field(description="Agent id, the partition key.", examples=["agent-42"])
    skills: list[AgentSkill] = Field(
        description="The complete new set of skill groups, each at most once; replaces the "
        "previous set (a skill group not listed is no longer served).",
    )
    tier: AgentTier = Field(description="The new (or unchanged) seniority.")
    capacity: AgentCapacity = Field(description="The complete new capacity; replaces the old.")
    changed_by: str = Field(
        description="Id of who made the change: the agent, a supervisor or an admin.",
        examples=["agent-7"],
    )
    changed_at: datetime = Field(description="When the change was made.")

    @field_validator("skills")
    @classmethod
    def _each_skill_group_once(cls, value: list[AgentSkill]) -> list[AgentSkill]:
        return skill_groups_listed_once(value)


@event("convohub.agent.presence_changed.v1", topic=AGENT)
class AgentPresenceChanged(EventPayload):
    """An agent went online, away or offline.

    Ingest produces it when the agent or a supervisor changes it on the desktop or the agent
    logs in or out; the router produces it when the agent's heartbeats stop.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "agent_id": "agent-42",
                    "from_presence": "online",
                    "to_presence": "offline",
                    "reason": "heartbeat_timeout",
                    "changed_at": "2026-11-23T09:41:30Z",
                }
            ]
        }
    )

    agent_id: str = Field(description="Agent id, the partition key.", examples=["agent-42"])
    from_presence: Presence = Field(description="Presence before the change.")
    to_presence: Presence = Field(description="Presence after the change.")
    reason: PresenceChangeReason = Field(description="Why the presence changed.")
    changed_at: datetime = Field(description="When the change took effect.")
    changed_by: str | None = Field(
        default=None,
        description="Id of the agent or supervisor who changed it; empty when the system did "
        "(heartbeat or idle timeout).",
        examples=["agent-7"],
    )
