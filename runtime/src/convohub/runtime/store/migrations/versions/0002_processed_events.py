"""Processed event ids per consumer group (recognising re-published events).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "convohub_processed_events",
        sa.Column("consumer_group", sa.String(255), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer_group", "event_id", name="pk_convohub_processed_events"),
    )
    op.create_index(
        "ix_convohub_processed_events_processed_at",
        "convohub_processed_events",
        ["processed_at"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_convohub_processed_events_processed_at", table_name="convohub_processed_events"
    )
    op.drop_table("convohub_processed_events")
