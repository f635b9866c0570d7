"""partial indexes for failed and blocking tasks

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_FAILED = "error_message IS NOT NULL"
_BLOCKING = "process_type = 'Error'"


def upgrade() -> None:
    for name, where in (
        ("ix_syncbus_task_failed", _FAILED),
        ("ix_syncbus_task_blocking", _BLOCKING),
    ):
        op.create_index(
            name,
            "syncbus_task",
            ["connector_id", "task_id"],
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )


def downgrade() -> None:
    op.drop_index("ix_syncbus_task_blocking", table_name="syncbus_task")
    op.drop_index("ix_syncbus_task_failed", table_name="syncbus_task")
