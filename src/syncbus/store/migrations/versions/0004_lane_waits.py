"""lane waits: what a waiting task awaits (indexed, to wake it), since when, and how long a
connector's tasks may wait

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_AWAITS = "awaits IS NOT NULL"


def upgrade() -> None:
    # Plain ADD COLUMNs (no table copy on SQLite); nothing waits yet.
    op.add_column("syncbus_connector", sa.Column("dependency_timeout", sa.Float(), nullable=True))
    op.add_column("syncbus_task", sa.Column("awaits", sa.String(length=400), nullable=True))
    op.add_column(
        "syncbus_task", sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_syncbus_task_awaits",
        "syncbus_task",
        ["awaits"],
        sqlite_where=sa.text(_AWAITS),
        postgresql_where=sa.text(_AWAITS),
    )


def downgrade() -> None:
    op.drop_index("ix_syncbus_task_awaits", table_name="syncbus_task")
    op.drop_column("syncbus_task", "waiting_since")
    op.drop_column("syncbus_task", "awaits")
    op.drop_column("syncbus_connector", "dependency_timeout")
