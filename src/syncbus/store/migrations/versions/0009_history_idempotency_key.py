"""history: a finished task's record keeps the idempotency key it was logged with

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("syncbus_history") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("syncbus_history") as batch:
        batch.drop_column("idempotency_key")
