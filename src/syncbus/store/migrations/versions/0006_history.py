"""history and lineage (CONTRACT §10): the record of finished tasks, and what a task keeps
for it while queued (the external object as logged, the producer's trace context); a
connector's coalesce switch

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMNs (no table copy on SQLite); tasks queued before keep no external object.
    op.add_column("syncbus_task", sa.Column("external", sa.Text(), nullable=True))
    op.add_column(
        "syncbus_connector",
        sa.Column("coalesce", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("syncbus_task", sa.Column("traceparent", sa.String(length=55), nullable=True))
    op.create_table(
        "syncbus_history",
        sa.Column("task_id", _BigId, autoincrement=False, nullable=False),
        sa.Column("connector_name", sa.String(length=100), nullable=False),
        sa.Column("task_type", sa.String(length=30), nullable=False),
        sa.Column("data_type", sa.String(length=20), nullable=False),
        sa.Column("process_type", sa.String(length=20), nullable=False),
        sa.Column("title", sa.String(length=450), nullable=False),
        sa.Column("object_type", sa.String(length=100), nullable=True),
        sa.Column("class_name", sa.String(length=100), nullable=True),
        sa.Column("code_name", sa.String(length=450), nullable=True),
        sa.Column("site_name", sa.String(length=100), nullable=True),
        sa.Column("lane", sa.String(length=400), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("logged_at", _Time, nullable=False),
        sa.Column("finished_at", _Time, nullable=False),
        sa.Column("external", sa.Text(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("resolved", sa.Text(), nullable=True),
        sa.Column("changes", sa.Text(), nullable=True),
        sa.Column("errors", sa.Text(), nullable=True),
        sa.Column("into_task_id", _BigId, nullable=True),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_index(
        "ix_syncbus_history_object", "syncbus_history", ["object_type", "code_name", "task_id"]
    )
    op.create_index("ix_syncbus_history_finished", "syncbus_history", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_syncbus_history_finished", table_name="syncbus_history")
    op.drop_index("ix_syncbus_history_object", table_name="syncbus_history")
    op.drop_table("syncbus_history")
    op.drop_column("syncbus_connector", "coalesce")
    op.drop_column("syncbus_task", "traceparent")
    op.drop_column("syncbus_task", "external")
