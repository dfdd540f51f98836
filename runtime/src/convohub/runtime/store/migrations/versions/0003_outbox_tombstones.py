"""Outbox rows may have a null value: tombstones for compacted topics.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


def _outbox(value_nullable: bool) -> sa.Table:
    """The outbox as revision 0001 made it, but for the value's NULL-ability: SQLite's
    batch mode copies the table from this definition rather than reflecting it, so the
    AUTOINCREMENT and the partial index survive the copy."""
    table = sa.Table(
        "convohub_outbox",
        sa.MetaData(naming_convention=_NAMING),
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.String(255), nullable=False, unique=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=value_nullable),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sqlite_autoincrement=True,
    )
    sa.Index(
        "ix_convohub_outbox_pending",
        table.c.seq,
        postgresql_where=table.c.published_at.is_(None),
        sqlite_where=table.c.published_at.is_(None),
    )
    return table


def _set_value_nullable(nullable: bool) -> None:
    bind = op.get_bind()
    sequence = None
    if bind.dialect.name == "sqlite":
        # The copy restarts AUTOINCREMENT at the highest seq left; keep the old high-water
        # mark, so a number handed out before (and purged since) is never handed out again.
        sequence = bind.execute(
            sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'convohub_outbox'")
        ).scalar()
    with op.batch_alter_table(
        "convohub_outbox",
        copy_from=_outbox(not nullable),
        table_kwargs={"sqlite_autoincrement": True},
    ) as batch:
        batch.alter_column("value", existing_type=sa.LargeBinary(), nullable=nullable)
    if sequence is not None:
        bind.execute(
            sa.text(
                "UPDATE sqlite_sequence SET seq = max(seq, :seq) WHERE name = 'convohub_outbox'"
            ),
            {"seq": sequence},
        )


def upgrade() -> None:
    _set_value_nullable(True)


def downgrade() -> None:
    # Tombstones cannot be kept in a NOT NULL column: unpublished ones are dropped.
    op.execute("DELETE FROM convohub_outbox WHERE value IS NULL")
    _set_value_nullable(False)
