"""workers: the processes that run connectors, seen again every heartbeat

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "syncbus_worker",
        sa.Column("worker_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("threads", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
        sa.Column("heartbeat", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_syncbus_worker")),
    )


def downgrade() -> None:
    op.drop_table("syncbus_worker")
