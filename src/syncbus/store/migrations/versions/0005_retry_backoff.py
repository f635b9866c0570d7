"""retries, quarantine, backpressure: a task's failed attempts, when it may be tried again and
how often its worker died with it; a connector's retry delays, quarantine bound and queue limit

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BACKING_OFF = "next_attempt_at IS NOT NULL"


def upgrade() -> None:
    # Plain ADD COLUMNs (no table copy on SQLite); no task has failed an attempt yet.
    op.add_column(
        "syncbus_task",
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "syncbus_task", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_syncbus_task_backoff",
        "syncbus_task",
        ["connector_id", "next_attempt_at"],
        sqlite_where=sa.text(_BACKING_OFF),
        postgresql_where=sa.text(_BACKING_OFF),
    )
    op.add_column("syncbus_connector", sa.Column("retry_delay", sa.Float(), nullable=True))
    op.add_column("syncbus_connector", sa.Column("retry_max_delay", sa.Float(), nullable=True))
    op.add_column("syncbus_connector", sa.Column("queue_limit", sa.Integer(), nullable=True))
    op.add_column("syncbus_connector", sa.Column("quarantine_after", sa.Integer(), nullable=True))
    op.create_table(
        "syncbus_inflight",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("task_ids", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connector_id"], ["syncbus_connector.connector_id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("owner"),
    )
    op.create_index(
        "ix_syncbus_inflight_connector_id", "syncbus_inflight", ["connector_id"], unique=False
    )
    op.add_column(
        "syncbus_task", sa.Column("deaths", sa.Integer(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    op.drop_index("ix_syncbus_inflight_connector_id", table_name="syncbus_inflight")
    op.drop_table("syncbus_inflight")
    op.drop_column("syncbus_task", "deaths")
    op.drop_column("syncbus_connector", "quarantine_after")
    op.drop_column("syncbus_connector", "queue_limit")
    op.drop_column("syncbus_connector", "retry_max_delay")
    op.drop_column("syncbus_connector", "retry_delay")
    op.drop_index("ix_syncbus_task_backoff", table_name="syncbus_task")
    op.drop_column("syncbus_task", "next_attempt_at")
    op.drop_column("syncbus_task", "attempts")
