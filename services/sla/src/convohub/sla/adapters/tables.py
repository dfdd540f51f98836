"""The sla service's tables; every name starts with `sla_`."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

PROJECTION_METADATA = MetaData()
"""The clock projection's tables: a replay drops and rebuilds exactly these."""
TIMER_METADATA = MetaData()
"""Tables a replay must keep: timers (a fired key never fires again), published windows,
the policy digest."""

CONVERSATIONS = Table(
    "sla_conversations",
    PROJECTION_METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("conversation_id", String(255), primary_key=True),
    Column("open", Boolean, nullable=False),
    Column("state", Text, nullable=False),  # ConversationSla as JSON: attributes, facts, clocks
)

CLOCKS = Table(
    "sla_clocks",
    PROJECTION_METADATA,
    Column("clock_id", String(400), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("conversation_id", String(255), nullable=False),
    Column("metric", String(32), nullable=False),
    Column("cycle", Integer, nullable=False),
    Column("policy_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("target_seconds", Integer, nullable=False),
    Column("counted_seconds", Float, nullable=False),
    Column("running_since", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("pause_reason", String(32)),
    Index("sla_clocks_conversation", "tenant_id", "conversation_id"),
    Index("sla_clocks_at_risk", "tenant_id", "state", "due_at"),
)

TIMERS = Table(
    "sla_timers",
    TIMER_METADATA,
    Column("timer_id", String(450), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("conversation_id", String(255), nullable=False),
    Column("clock_id", String(400), nullable=False),
    Column("timer_key", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("due_at", DateTime(timezone=True)),  # NULL once fired: the due index skips it
    Column("fired_at", DateTime(timezone=True)),
    Column("policy_id", String(64), nullable=False),
    Column("metric", String(32), nullable=False),
    Column("target_seconds", Integer, nullable=False),
    Column("offset_seconds", Float, nullable=False),
    Column("clock_due_at", DateTime(timezone=True), nullable=False),
    Column("threshold_percent", Integer),
    Column("step", Integer),
    Column("action", String(32)),
    Column("target_id", String(255)),
    Column("cause_event_id", String(255), nullable=False),
    Column("correlation_id", String(512), nullable=False),
    Index("sla_timers_due", "due_at"),
    Index("sla_timers_clock", "clock_id"),
)

CUSTOMER_CONVERSATIONS = Table(
    "sla_customer_conversations",
    PROJECTION_METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("customer_id", String(255), primary_key=True),
    Column("conversation_id", String(255), primary_key=True),
)

CUSTOMER_SEGMENTS = Table(
    "sla_customer_segments",
    PROJECTION_METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("customer_id", String(255), primary_key=True),
    Column("segment_id", String(255), primary_key=True),
)

ANSWERS = Table(
    "sla_answers",
    PROJECTION_METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("conversation_id", String(255), primary_key=True),
    Column("skill_group", String(255)),
    Column("channel", String(32)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("answered_at", DateTime(timezone=True)),
    Column("abandoned_at", DateTime(timezone=True)),
    Column("wait_seconds", Float),
    Index("sla_answers_answered", "tenant_id", "answered_at"),
    Index("sla_answers_abandoned", "tenant_id", "abandoned_at"),
)

SERVICE_LEVEL_WINDOWS = Table(
    "sla_service_level_windows",
    TIMER_METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("window_start", DateTime(timezone=True), primary_key=True),
    Column("published_at", DateTime(timezone=True), nullable=False),
)

POLICY_VERSIONS = Table(
    "sla_policy_versions",
    TIMER_METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("digest", String(64), nullable=False),
)

METADATA = MetaData()
"""Every table of the service (what the host creates at start)."""
for _table in (*PROJECTION_METADATA.tables.values(), *TIMER_METADATA.tables.values()):
    _table.to_metadata(METADATA)
