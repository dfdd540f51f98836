"""CRM's tables (SQLAlchemy Core), every name prefixed `crm_`.

`METADATA` holds the projection's tables: customers, identifiers, merges, proposals,
conversations and the timeline. `LEDGER_METADATA` holds what must outlive a rebuild of the
projection: the conversations whose customer was erased (ids only, no personal data), so
replaying the log does not bring the erased person back.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
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

METADATA = MetaData()
LEDGER_METADATA = MetaData()

CUSTOMERS = Table(
    "crm_customers",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("customer_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("merged_into", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("display_name", Text),
    Column("name_key", Text),
    Column("profile", JSON, nullable=False),
    Column("segments", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Index("crm_customers_name", "tenant_id", "name_key"),
    Index("crm_customers_merged_into", "tenant_id", "merged_into"),
)
IDENTIFIERS = Table(
    "crm_identifiers",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("value", String(320), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("verified", Boolean, nullable=False),
    Column("channel_id", String(64)),
    Index("crm_identifiers_customer", "tenant_id", "customer_id"),
)
MERGES = Table(
    "crm_merges",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("merge_id", String(64), primary_key=True),
    Column("survivor_id", String(64), nullable=False),
    Column("merged_id", String(64), nullable=False),
    Column("merged_at", DateTime(timezone=True), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("approved_by", String(128)),
    Column("proposal_id", String(64)),
    Column("undone", Boolean, nullable=False),
    Column("erased", Boolean, nullable=False),
    Column("detail", JSON, nullable=False),
    Index("crm_merges_survivor", "tenant_id", "survivor_id"),
    Index("crm_merges_merged", "tenant_id", "merged_id"),
)
PROPOSALS = Table(
    "crm_merge_proposals",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("proposal_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("candidate_id", String(64), nullable=False),
    Column("score", Float, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("proposed_at", DateTime(timezone=True), nullable=False),
)
CONVERSATIONS = Table(
    "crm_conversations",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("conversation_id", String(128), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("channel", String(32)),
    Column("channel_id", String(64)),
    Column("started_at", DateTime(timezone=True)),
    Index("crm_conversations_customer", "tenant_id", "customer_id"),
)
TIMELINE = Table(
    "crm_timeline",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("entry_id", String(64), primary_key=True),
    Column("conversation_id", String(128), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("kind", String(48), nullable=False),
    Column("channel", String(32)),
    Column("channel_id", String(64)),
    Column("direction", String(16)),
    Column("message_id", String(128)),
    Column("text", Text),
    Index("crm_timeline_conversation", "tenant_id", "conversation_id", "occurred_at"),
)
APPLIED_COMMANDS = Table(
    "crm_applied_commands",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("event_id", String(64), primary_key=True),
)
"""Events the API emitted after applying them itself: the projection, which also reads
the customer topic (to rebuild those commands' effects on replay), skips them live."""
ERASED_CONVERSATIONS = Table(
    "crm_erased_conversations",
    LEDGER_METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("conversation_id", String(128), primary_key=True),
    Column("erased_at", DateTime(timezone=True), nullable=False),
)

SERVICE_METADATA = MetaData()
"""Every CRM table (copies of both of the above), which the host creates at start."""
for _table in (*METADATA.tables.values(), *LEDGER_METADATA.tables.values()):
    _table.to_metadata(SERVICE_METADATA)
