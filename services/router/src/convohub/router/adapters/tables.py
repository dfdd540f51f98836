"""The router's tables (created by the host at start). Capacity lives in `router_agents`
(total) and `router_agent_channels` (per channel kind); both are only ever changed by
conditional updates, so no transaction can push a load above its capacity."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

METADATA = MetaData()

AGENTS = Table(
    "router_agents",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("agent_id", String(128), primary_key=True),
    Column("name", String(255), nullable=False, default=""),
    Column("tier", String(16), nullable=False),
    Column("skills", JSON, nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("load", Integer, nullable=False, default=0),
    Column("presence", String(16), nullable=False, default="offline"),
    Column("presence_changed_at", DateTime(timezone=True), nullable=True),
    Column("last_heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("idle_since", DateTime(timezone=True), nullable=False),
)

AGENT_CHANNELS = Table(
    "router_agent_channels",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("agent_id", String(128), primary_key=True),
    Column("channel", String(16), primary_key=True),
    Column("capacity", Integer, nullable=False),
    Column("load", Integer, nullable=False, default=0),
)

AGENT_VERSIONS = Table(
    "router_agent_versions",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("agent_id", String(128), primary_key=True),
    # A new random number in every transaction that changes the agent's row or its channel
    # rows (never a counter: a rolled-back change must not be mistaken for a later one).
    # A dispatch round compares it with its in-memory copy of the agent to know what to
    # re-read. (A table of its own, so stores created before it keep working.)
    Column("version", BigInteger, nullable=False),
)

CONVERSATIONS = Table(
    "router_conversations",
    METADATA,
    Column("conversation_id", String(128), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("customer_key", String(64), nullable=True),
    Column("customer_id", String(128), nullable=True),
    Column("ivr_choice", String(32), nullable=True),
    # new -> queued -> offered -> assigned -> closed (and back to queued on decline/transfer)
    Column("state", String(16), nullable=False),
    Column("skill_group", String(64), nullable=True),
    Column("priority", String(2), nullable=True),
    Column("vip", Boolean, nullable=False, default=False),
    Column("required_tier", String(16), nullable=True),
    Column("preferred_agent", String(128), nullable=True),
    Column("preferred_until", DateTime(timezone=True), nullable=True),
    Column("queued_at", DateTime(timezone=True), nullable=True),
    Column("agent_id", String(128), nullable=True),
    Column("offer_id", String(64), nullable=True),
    Column("offer_expires_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("excluded", JSON, nullable=False, default=list),
    Column("last_position", Integer, nullable=True),
    Column("classification", JSON, nullable=True),
    Column("explanation", JSON, nullable=True),
    Column("history", JSON, nullable=False, default=list),
    Index("router_conversations_queue", "tenant_id", "state"),
)

CUSTOMERS = Table(
    "router_customers",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("customer_key", String(64), primary_key=True),
    Column("customer_id", String(128), nullable=True, index=True),
    Column("last_agent_id", String(128), nullable=True),
    Column("last_assigned_at", DateTime(timezone=True), nullable=True),
)

SEGMENTS = Table(
    "router_customer_segments",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("customer_id", String(128), primary_key=True),
    Column("segment_id", String(128), primary_key=True),
)

ROUND_ROBIN = Table(
    "router_round_robin",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("skill_group", String(64), primary_key=True),
    Column("last_agent_id", String(128), nullable=False),
)
