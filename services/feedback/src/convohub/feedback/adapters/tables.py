"""The feedback service's tables (SQLAlchemy Core), all prefixed `feedback_`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
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
from sqlalchemy.types import TypeDecorator

METADATA = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both PostgreSQL and SQLite (which keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


CONVERSATIONS = Table(
    "feedback_conversations",
    METADATA,
    Column("conversation_id", String(255), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("customer_id", String(255)),
    Column("started_at", UtcDateTime()),
    Column("closed_at", UtcDateTime()),
    Column("state", JSON, nullable=False),
    Index("feedback_conversations_tenant_started", "tenant_id", "started_at"),
    Index("feedback_conversations_customer", "customer_id"),
)

SURVEYS = Table(
    "feedback_surveys",
    METADATA,
    Column("survey_id", String(255), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("conversation_id", String(255), nullable=False),
    Column("customer_id", String(255)),
    Column("kinds", JSON, nullable=False),
    Column("delivery", String(32), nullable=False),
    Column("channel_id", String(255), nullable=False),
    Column("language", String(16), nullable=False),
    Column("text", Text),
    Column("status", String(16), nullable=False),  # scheduled, sent, answered, expired, cancelled
    Column("due_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime()),
    Column("answered_at", UtcDateTime()),
    Column("csat", Integer),
    Column("nps", Integer),
    Column("comment", Text),
    Column("raw_answer", Text),
    Column("follow_up_id", String(255)),
    Column("correlation_id", String(255), nullable=False),
    Index("feedback_surveys_status_due", "status", "due_at"),
    Index("feedback_surveys_conversation", "conversation_id"),
)

FOLLOW_UPS = Table(
    "feedback_follow_ups",
    METADATA,
    Column("follow_up_id", String(255), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("conversation_id", String(255), nullable=False),
    Column("customer_id", String(255)),
    Column("survey_id", String(255)),
    Column("trigger", String(32), nullable=False),
    Column("trigger_score", Float, nullable=False),
    Column("priority", String(4), nullable=False),
    Column("status", String(16), nullable=False),  # open, closed
    Column("requested_at", UtcDateTime(), nullable=False),
    Column("closed_at", UtcDateTime()),
    Column("outcome", String(32)),
    Column("closed_by", String(255)),
    Column("note", Text),
    Column("correlation_id", String(255), nullable=False),
    Index("feedback_follow_ups_tenant_status", "tenant_id", "status"),
)

SETTINGS = Table(
    "feedback_settings",
    METADATA,
    Column("name", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)
