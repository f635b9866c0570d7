"""history: the tasks coalesced into a carrier, found by an index of only coalesced rows

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_COALESCED = sa.text("into_task_id IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_syncbus_history_into",
        "syncbus_history",
        ["into_task_id"],
        sqlite_where=_COALESCED,
        postgresql_where=_COALESCED,
    )


def downgrade() -> None:
    op.drop_index("ix_syncbus_history_into", table_name="syncbus_history")
