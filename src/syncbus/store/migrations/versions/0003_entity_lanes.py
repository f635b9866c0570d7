"""entity lanes: the connector's ordering, a task's lane and what it waits for

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_HAS_LANE = "lane IS NOT NULL"


def upgrade() -> None:
    # Plain ADD COLUMNs (no table copy on SQLite): existing connectors keep Kentico's
    # ordering, existing tasks have no lane.
    op.add_column(
        "syncbus_connector",
        sa.Column("ordering", sa.String(length=20), server_default="connector", nullable=False),
    )
    op.add_column("syncbus_task", sa.Column("lane", sa.String(length=400), nullable=True))
    op.add_column("syncbus_task", sa.Column("waiting_for", sa.Text(), nullable=True))
    op.create_index(
        "ix_syncbus_task_lane",
        "syncbus_task",
        ["connector_id", "lane", "task_id"],
        sqlite_where=sa.text(_HAS_LANE),
        postgresql_where=sa.text(_HAS_LANE),
    )


def downgrade() -> None:
    op.drop_index("ix_syncbus_task_lane", table_name="syncbus_task")
    # Plain DROP COLUMNs (SQLite 3.35 and later have them): no table copy.
    op.drop_column("syncbus_task", "waiting_for")
    op.drop_column("syncbus_task", "lane")
    op.drop_column("syncbus_connector", "ordering")
