"""The ingest service's tables, all on one `METADATA` (the host creates them at start).

Every table name starts with `ingest_`. The channel side (webhooks, conversation mapping,
idempotency, web chat) and the desk side (agent commands, read model, outbound delivery)
each declare their tables on this `METADATA`, in their own modules.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

METADATA = MetaData()

# --- the channel (inbound) side --------------------------------------------------------

INBOUND_CLAIMS = Table(
    "ingest_inbound_claims",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("channel_id", String(64), primary_key=True),
    Column("dedupe_key", String(255), primary_key=True),
    Column("state", String(16), nullable=False),  # pending | done
    Column("owner", String(36), nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
    Column("records", JSON, nullable=True),  # events to publish; cleared once published
    Column("outcome", JSON, nullable=True),  # what the first answer said (ids, no content)
)
"""One row per provider message (or status, or call phase) ever accepted: the dedupe key."""

CONVERSATIONS = Table(
    "ingest_conversations",
    METADATA,
    Column("conversation_id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("customer_key", String(320), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("channel_id", String(64), nullable=False),
    Column("address", String(320), nullable=False),
    Column("display_name", String(255), nullable=True),
    Column("status", String(16), nullable=False),
    Column("survey_pending", Boolean, nullable=False, default=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ingest_conversations_by_customer", "tenant_id", "customer_key", "started_at"),
)
"""The conversation each customer contact belongs to, and its lifecycle state."""

EMAIL_THREADS = Table(
    "ingest_email_threads",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("message_ref", String(512), primary_key=True),
    Column("conversation_id", String(64), nullable=False),
)
"""E-mail Message-IDs seen in a conversation, so a reply (In-Reply-To) finds its thread."""

PROVIDER_MESSAGES = Table(
    "ingest_provider_messages",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("channel_id", String(64), primary_key=True),
    Column("provider_message_id", String(255), primary_key=True),
    Column("conversation_id", String(64), nullable=False),
    Column("message_id", String(64), nullable=False),
)
"""Outbound messages by provider id, so status callbacks find their message."""

CALLS = Table(
    "ingest_calls",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("channel_id", String(64), primary_key=True),
    Column("call_id", String(64), primary_key=True),
    Column("conversation_id", String(64), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("answered", Boolean, nullable=False, default=False),
    Column("ended", Boolean, nullable=False, default=False),
    Column("ivr_choice", String(32), nullable=True),
)

WEBCHAT_SESSIONS = Table(
    "ingest_webchat_sessions",
    METADATA,
    Column("token_hash", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("channel_id", String(64), nullable=False),
    Column("visitor_id", String(128), nullable=False),
    Column("customer_key", String(320), nullable=False),
    Column("display_name", String(255), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

WEBCHAT_REPLIES = Table(
    "ingest_webchat_replies",
    METADATA,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(64), nullable=False, unique=True),
    Column("tenant_id", String(64), nullable=False),
    Column("channel_id", String(64), nullable=False),
    Column("address", String(320), nullable=False),
    Column("conversation_id", String(64), nullable=False),
    Column("author", JSON, nullable=False),
    Column("text", Text, nullable=True),
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Index("ingest_webchat_replies_by_visitor", "tenant_id", "channel_id", "address", "seq"),
)
"""Agents' and bots' messages to web chat visitors (from message_sent), streamed over SSE."""

CUSTOMER_KEYS = Table(
    "ingest_customer_keys",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("customer_id", String(64), primary_key=True),
    Column("customer_key", String(320), primary_key=True),
)
"""Which customer keys CRM resolved to which customer (customer.identified): for erasure."""

ERASED_CONVERSATIONS = Table(
    "ingest_erased_conversations",
    METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("conversation_id", String(255), primary_key=True),
    Column("erased_at", DateTime(timezone=True), nullable=False),
)
"""The erasure ledger: conversations whose customer was erased (ids only, no personal
data). On no projection's metadata, so a replay never drops it: every ingest projection
that stores personal data consults it, and a rebuild does not bring the person back."""
