"""entity lanes: the lanes a queued SNAPSHOT task writes through its children

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Snapshots queued before this revision have no rows: later tasks of their children's
    # lanes do not wait for them (as before).
    op.create_table(
        "syncbus_task_lane",
        sa.Column("task_id", _BigId, nullable=False),
        sa.Column("lane", sa.String(length=400), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["syncbus_task.task_id"],
            name=op.f("fk_syncbus_task_lane_task_id_syncbus_task"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "lane", name=op.f("pk_syncbus_task_lane")),
    )
    op.create_index("ix_syncbus_task_lane_lane", "syncbus_task_lane", ["lane", "task_id"])


def downgrade() -> None:
    op.drop_index("ix_syncbus_task_lane_lane", table_name="syncbus_task_lane")
    op.drop_table("syncbus_task_lane")
