"""The batch a lease-free run has in flight (``syncbus_inflight``): recorded once its lanes
are locked, in a transaction of its own, and deleted in the batch's commit; renewed by the
run's heartbeat. A record whose time has run out is the batch of a runner that died with it
(poison quarantine, CONTRACT §9)."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from syncbus.store.dialect import dialect_of
from syncbus.store.tables import inflight_table as t


def record(
    conn: sa.Connection, owner: str, connector_id: int, task_ids: Iterable[int], seconds: float
) -> None:
    values = {
        "owner": owner,
        "connector_id": connector_id,
        "task_ids": ",".join(str(i) for i in task_ids),
        "expires_at": conn.execute(sa.select(dialect_of(conn).now_epoch())).scalar_one() + seconds,
    }
    dialect_of(conn).upsert(conn, t, values, ["owner"])


def clear(conn: sa.Connection, owner: str) -> None:
    conn.execute(t.delete().where(t.c.owner == owner))


def renew(conn: sa.Connection, owner: str, seconds: float) -> None:
    now = dialect_of(conn).now_epoch()
    conn.execute(t.update().where(t.c.owner == owner).values(expires_at=now + seconds))


def take_dead(conn: sa.Connection, connector_id: int) -> list[list[int]]:
    """The batches of the connector's runners that died (records past their time), taken
    out: each as its task ids. Two runners never get the same record."""
    now = dialect_of(conn).now_epoch()
    rows = conn.execute(
        t.delete()
        .where(t.c.connector_id == connector_id, t.c.expires_at < now)
        .returning(t.c.task_ids)
    ).scalars()
    return [[int(i) for i in ids.split(",") if i] for ids in rows]


def held_by_others(conn: sa.Connection, connector_id: int, owner: str) -> set[int]:
    """The task ids in the connector's other in-flight records: batches of live runners, and
    of dead ones whose records have not run out yet (not to be touched before they are
    counted: poison quarantine)."""
    rows = conn.execute(
        sa.select(t.c.task_ids).where(t.c.connector_id == connector_id, t.c.owner != owner)
    ).scalars()
    return {int(i) for ids in rows for i in ids.split(",") if i}
