"""Reads of the queue for the Python API, the CLI, the HTTP API and the admin UI."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from syncbus.store.tables import connector_table, lease_table, task_table


def task_joined(*columns: Any) -> sa.Select[Any]:
    """Tasks with their connector's name and whether a run holds them now (the one place that
    rule is written: the task lies in the batch range the current lease owner claimed)."""
    t, lease = task_table, lease_table
    running = sa.and_(
        lease.c.owner.is_not(None),
        t.c.task_id >= lease.c.run_first_task_id,
        t.c.task_id <= lease.c.run_last_task_id,
    )
    return (
        sa.select(
            *columns,
            connector_table.c.connector_name,
            sa.case((running, True), else_=False).label("is_running"),
        )
        .join(connector_table, connector_table.c.connector_id == t.c.connector_id)
        .outerjoin(lease, lease.c.connector_id == t.c.connector_id)
    )
