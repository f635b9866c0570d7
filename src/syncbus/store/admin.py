"""The operator's actions on queued tasks (Python API, CLI, admin UI): delete one task, delete
many without waiting on a running batch, and where a mass action's range ends."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from syncbus.store.dialect import dialect_of
from syncbus.store.tables import connector_table as c
from syncbus.store.tables import task_table as t

_LAST_TASK_ID = sa.select(sa.func.max(t.c.task_id))
_DELETE_ONE = t.delete().where(t.c.task_id == sa.bindparam("tid"))
_IDS: sa.BindParameter[int] = sa.bindparam("ids", expanding=True)
_QUEUED = sa.select(t.c.task_id).where(t.c.task_id.in_(_IDS))
_DELETE_MANY = t.delete().where(t.c.task_id.in_(_IDS))
_CONNECTORS_OF = (
    sa.select(t.c.task_id, c.c.connector_name)
    .join(c, c.c.connector_id == t.c.connector_id)
    .where(t.c.task_id.in_(_IDS))
)


def by_connector(conn: sa.Connection, ids: list[int]) -> dict[str, list[int]]:
    """The queued tasks among ``ids``, by their connector's name (ids ascending)."""
    out: dict[str, list[int]] = {}
    for task_id, name in conn.execute(_CONNECTORS_OF.order_by(t.c.task_id), {"ids": ids}):
        out.setdefault(str(name), []).append(int(task_id))
    return out


def last_task_id(conn: sa.Connection) -> int:
    """The highest queued task id (0 for an empty queue)."""
    return int(conn.execute(_LAST_TASK_ID).scalar() or 0)


def delete_task(conn: sa.Connection, task_id: int) -> None:
    """Remove the task (its sync log goes with it). The caller has locked it."""
    conn.execute(_DELETE_ONE, {"tid": task_id})


def delete_tasks(
    conn: sa.Connection,
    ids: list[int],
    before: Callable[[sa.Connection, list[int]], None] | None = None,
) -> tuple[int, set[int]]:
    """Remove the queued tasks among ``ids`` (at most a few hundred); returns how many went
    and the ids left alone because another transaction holds them.

    Where rows can be locked one by one (PostgreSQL), tasks that a running batch holds are
    skipped (``SKIP LOCKED``) instead of waited for: a stalled worker must not hang a mass
    action. SQLite's writer holds the whole database, so nothing is held by another.
    ``before`` is called with the ids about to go (their records are written there)."""
    busy: set[int] = set()
    lock = dialect_of(conn).skip_locked(_QUEUED)
    if lock is not None:
        queued = set(conn.execute(_QUEUED, {"ids": ids}).scalars())
        free = set(conn.execute(lock, {"ids": ids}).scalars())
        busy, ids = queued - free, sorted(free)
    if before is not None and ids:
        before(conn, ids)
    gone = conn.execute(_DELETE_MANY, {"ids": ids})
    return int(gone.rowcount), busy
