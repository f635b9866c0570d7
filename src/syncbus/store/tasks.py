"""The task queue as a run sees it: claim the next batch, load it (locked), take tasks out,
mark them, find one task for an admin action, and what to poll for new tasks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from syncbus.enums import ProcessType
from syncbus.store.dialect import dialect_of
from syncbus.store.tables import task_table

t = task_table

# What applying a task reads from its row (never the idempotency key or the timestamps).
RUN_COLUMNS = (
    t.c.task_id,
    t.c.task_type,
    t.c.data_type,
    t.c.process_type,
    t.c.object_type,
    t.c.site_name,
    t.c.title,
    t.c.data,
    t.c.error_message,
)


def _in_range(stmt: sa.Select[Any], connector_id: int, after: int, upto: int) -> sa.Select[Any]:
    """The connector's tasks with ids in (after, upto], in order."""
    return stmt.where(
        t.c.connector_id == connector_id, t.c.task_id > after, t.c.task_id <= upto
    ).order_by(t.c.task_id)


def next_ids(
    conn: sa.Connection, connector_id: int, after: int, limit: int, max_bytes: int
) -> list[int]:
    """The ids of the connector's next tasks after ``after``, in order: at most ``limit``
    and, past the first, no more than ``max_bytes`` of stored payload."""
    size = dialect_of(conn).byte_length(t.c.data)
    rows = conn.execute(
        sa.select(t.c.task_id, size)
        .where(t.c.connector_id == connector_id, t.c.task_id > after)
        .order_by(t.c.task_id)
        .limit(limit)
    ).all()
    ids: list[int] = []
    total = 0
    for task_id, stored in rows:
        total += int(stored or 0)
        if ids and total > max_bytes:
            break
        ids.append(int(task_id))
    return ids


def load_batch(conn: sa.Connection, connector_id: int, after: int, upto: int) -> list[Any]:
    """The batch's rows, locked without waiting: an admin action holding one of them makes
    the batch fail with a lock-wait error (transient: tried again shortly), never wait."""
    stmt = _in_range(sa.select(*RUN_COLUMNS), connector_id, after, upto)
    return list(conn.execute(dialect_of(conn).lock_nowait(stmt)))


def ids_in_range(conn: sa.Connection, connector_id: int, after: int, upto: int) -> list[int]:
    stmt = _in_range(sa.select(t.c.task_id), connector_id, after, upto)
    return [int(i) for i in conn.execute(stmt).scalars()]


def row(conn: sa.Connection, task_id: int) -> Any:
    """One task's row as a run reads it, or None."""
    return conn.execute(sa.select(*RUN_COLUMNS).where(t.c.task_id == task_id)).first()


def lock_row(conn: sa.Connection, task_id: int) -> Any:
    """One task's row (with its connector id), locked for an admin action without waiting
    (the caller turns the lock-wait error into ``TaskBusyError``). None when not queued."""
    stmt = sa.select(*RUN_COLUMNS, t.c.connector_id).where(t.c.task_id == task_id)
    return conn.execute(dialect_of(conn).lock_nowait(stmt)).first()


def remove(conn: sa.Connection, task_ids: Iterable[int]) -> int:
    """Take tasks out of the queue (their sync logs go with them); how many there were."""
    ids = list(task_ids)
    if not ids:
        return 0
    return int(conn.execute(t.delete().where(t.c.task_id.in_(ids))).rowcount)


def set_process_type(conn: sa.Connection, task_id: int, process_type: ProcessType) -> None:
    conn.execute(t.update().where(t.c.task_id == task_id).values(process_type=process_type.value))


_SQLITE_SEQUENCE = sa.text("SELECT seq FROM sqlite_sequence WHERE name = :table").bindparams(
    table=t.name
)


def log_sequence(conn: sa.Connection) -> int | None:
    """A number that moves whenever anyone logs a task, where the backend has one to poll
    (SQLite's task-id counter); None where workers are woken by notifications instead."""
    if dialect_of(conn).notifies:
        return None
    value = conn.execute(_SQLITE_SEQUENCE).scalar()
    return None if value is None else int(value)
