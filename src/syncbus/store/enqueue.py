"""Logging's SQL: the checks before a task is logged, the task rows' INSERTs, the connector's
logging lock, the NOTIFY that wakes workers, and idempotency keys.

Intake (``syncbus.intake``) decides what to log; this module writes it. Statements are built
once, at import, for each backend (``syncbus.store.dialect``).

PostgreSQL: task ids come from a sequence at INSERT but become visible at COMMIT, so two
concurrent loggers could commit out of id order, and a run could pass a lower id before it is
visible. A connector's inserts are serialised until commit by a transaction-scoped advisory
lock (released when the transaction ends), which keeps ids in commit order. Where it can, the
lock is taken in the INSERT's own statement, with the NOTIFY: one round trip per task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from syncbus.store.db import column_length
from syncbus.store.dialect import POSTGRES, SQLITE, Dialect, dialect_of
from syncbus.store.switches import LOGGING, MASTER, first_off, setting_expr
from syncbus.store.tables import WAKE_KEY, setting_table, task_lane_table, task_table
from syncbus.store.tables import connector_table as ct
from syncbus.store.tables import idempotency_table as keys

_LOG_LOCK = 0x5342  # advisory lock class for logging, keyed by connector id

# The keys of a task row to insert (``insert_task``, ``insert_tasks``).
TASK_COLUMNS = (
    "connector_id",
    "task_type",
    "data_type",
    "process_type",
    "object_type",
    "class_name",
    "title",
    "site_name",
    "created_at",
    "data",
    "idempotency_key",
    "error_message",
    "lane",
    "external",
    "traceparent",
)


# Lengths of the columns the logging call writes or compares, read from the schema.
NAME_MAX = column_length(ct.c.connector_name)
SITE_MAX = column_length(task_table.c.site_name)
KEY_MAX = column_length(keys.c.idempotency_key)
LANE_MAX = column_length(task_table.c.lane)


@dataclass(frozen=True)
class LogState:
    """What a logging call checks before it runs the connector's code."""

    switched_off: str | None  # the setting that stops logging now (store.switches.first_off)
    connector_id: int | None
    connector_enabled: bool
    site_exists: bool
    existing_task_id: int | None  # the task logged earlier with the same idempotency key
    queue_limit: int | None = None  # logging is refused at this many queued tasks


SiteLookup = Callable[[sa.BindParameter[str]], sa.ScalarSelect[Any]]


def state_query(site_id: SiteLookup) -> sa.Select[Any]:
    """One round trip for every check a logging call makes (build it once, read it with
    ``read_state``). ``site_id`` gives the content layer's subquery of a site's id by name."""
    name = sa.bindparam("name", type_=sa.String())
    key = sa.bindparam("key", type_=sa.String())
    cid = sa.select(ct.c.connector_id).where(ct.c.connector_name == name).scalar_subquery()
    return sa.select(
        setting_expr(MASTER).label("master"),
        setting_expr(LOGGING).label("logging"),
        cid.label("cid"),
        sa.select(ct.c.enabled).where(ct.c.connector_name == name).scalar_subquery().label("cen"),
        sa.select(ct.c.queue_limit)
        .where(ct.c.connector_name == name)
        .scalar_subquery()
        .label("limit"),
        site_id(sa.bindparam("site", type_=sa.String())).label("sid"),
        sa.select(keys.c.task_id)
        .where(keys.c.connector_id == cid, keys.c.idempotency_key == key)
        .scalar_subquery()
        .label("existing"),
    )


def read_state(
    conn: sa.Connection,
    query: sa.Select[Any],
    connector_name: str,
    site_name: str | None,
    key: str | None,
) -> LogState:
    row = conn.execute(query, {"name": connector_name, "site": site_name, "key": key}).one()
    return LogState(
        switched_off=first_off({MASTER: row.master, LOGGING: row.logging}, LOGGING),
        connector_id=row.cid,
        connector_enabled=bool(row.cen),
        site_exists=row.sid is not None,
        existing_task_id=row.existing,
        queue_limit=row.limit,
    )


_INSERT_TASK = task_table.insert().returning(task_table.c.task_id)
_KEY_LOOKUP = sa.select(keys.c.task_id).where(
    keys.c.connector_id == sa.bindparam("connector_id", type_=sa.Integer()),
    keys.c.idempotency_key == sa.bindparam("idempotency_key", type_=sa.String()),
)


class _Statements:
    """One backend's logging statements."""

    def __init__(self, dialect: Dialect) -> None:
        connector_id = sa.bindparam("connector_id", type_=sa.Integer())
        lock = dialect.xact_lock(_LOG_LOCK, connector_id)
        notify = dialect.notify_expr(sa.bindparam("connector_name", type_=sa.String()))
        self.lock = None if lock is None else sa.select(lock)
        # Lock, insert and NOTIFY in one statement, where the backend has both.
        self.insert_notify = (
            None if lock is None or notify is None else _insert_notify(lock, notify)
        )
        self.insert_many = dialect.returning_ids(task_table.insert(), task_table.c.task_id)
        self.claim_key = dialect.insert(keys).on_conflict_do_nothing().returning(keys.c.task_id)


def _insert_notify(lock: sa.ColumnElement[Any], notify: sa.ColumnElement[Any]) -> Any:
    """The row is selected FROM the lock, so the lock is held before the INSERT draws the
    task id from its sequence."""
    held = sa.select(lock.label("locked")).cte("lock")
    row = sa.select(
        *(sa.bindparam(c, type_=task_table.c[c].type).label(c) for c in TASK_COLUMNS)
    ).select_from(held)
    ins = (
        task_table.insert()
        .from_select(list(TASK_COLUMNS), row)
        .returning(task_table.c.task_id)
        .cte("ins")
    )
    return sa.select(ins.c.task_id, notify).select_from(ins)


_BY_DIALECT: dict[Dialect, _Statements] = {d: _Statements(d) for d in (SQLITE, POSTGRES)}


def insert_tasks(conn: sa.Connection, connector_name: str, rows: list[dict[str, Any]]) -> list[int]:
    """Several tasks of one connector (none with an idempotency key) in one multi-row INSERT,
    under the connector's logging lock; their ids in the rows' order. NOTIFYs the workers."""
    dialect = dialect_of(conn)
    st = _BY_DIALECT[dialect]
    if st.lock is not None:
        conn.execute(st.lock, {"connector_id": rows[0]["connector_id"]})
    ids = sorted(int(i) for i in conn.execute(st.insert_many, rows).scalars())
    dialect.notify(conn, connector_name)
    return ids


def insert_task(
    conn: sa.Connection,
    connector_name: str,
    row: dict[str, Any],
    *,
    notify: bool,
    locked: bool,
) -> int:
    """One task; its id. Takes the connector's logging lock unless ``locked`` says this
    transaction holds it. With ``notify``, also NOTIFYs the workers (in the same statement)."""
    st = _BY_DIALECT[dialect_of(conn)]
    if notify and st.insert_notify is not None:
        params = {**row, "connector_name": connector_name}
        return int(conn.execute(st.insert_notify, params).scalar_one())
    if not locked and st.lock is not None:
        conn.execute(st.lock, {"connector_id": row["connector_id"]})
    task_id = int(conn.execute(_INSERT_TASK, row).scalar_one())
    if notify:
        notify_logged(conn, connector_name)
    return task_id


def replace_object(conn: sa.Connection, task_id: int, values: dict[str, Any]) -> None:
    """Edit and replay (CONTRACT §10): a queued task's object is replaced in place (same id,
    same place in its queue, its error log and last error kept: still ``failed`` until it
    runs); it no longer waits or backs off, and a task stopped as ``Error`` is ``Default``
    again: the operator fixed it, so the queue's next run tries it."""
    t = task_table
    failed = t.c.process_type == "Error"
    conn.execute(
        t.update()
        .where(t.c.task_id == task_id)
        .values(
            **values,
            process_type=sa.case((failed, "Default"), else_=t.c.process_type),
            awaits=None,
            waiting_for=None,
            waiting_since=None,
            next_attempt_at=None,
        )
    )


def insert_child_lanes(conn: sa.Connection, lanes: list[tuple[int, list[str]]]) -> None:
    """Record the lanes queued SNAPSHOT tasks write through their children: (task id, lanes)."""
    rows = [{"task_id": task_id, "lane": lane} for task_id, names in lanes for lane in names]
    if rows:
        conn.execute(task_lane_table.insert(), rows)


def replace_child_lanes(conn: sa.Connection, task_id: int, lanes: list[str]) -> None:
    """A queued task's child lanes after its object was replaced (edit and replay)."""
    conn.execute(task_lane_table.delete().where(task_lane_table.c.task_id == task_id))
    insert_child_lanes(conn, [(task_id, lanes)])


def take_logging_lock(conn: sa.Connection, connector_id: int) -> None:
    """Hold the connector's logging lock until the transaction ends (where the backend has
    one; SQLite's write lock already serialises loggers). Take it before any SAVEPOINT: a
    lock taken inside one is released when the SAVEPOINT rolls back."""
    st = _BY_DIALECT[dialect_of(conn)]
    if st.lock is not None:
        conn.execute(st.lock, {"connector_id": connector_id})


def notify_logged(conn: sa.Connection, connector_name: str) -> None:
    """Wake the connector's workers for a task this transaction logs: a NOTIFY on
    PostgreSQL; nothing on SQLite, whose workers see the task-id counter move."""
    dialect_of(conn).notify(conn, connector_name)


def notify_workers(conn: sa.Connection, connector_name: str) -> None:
    """Wake the workers of every process when the transaction commits: on PostgreSQL a
    NOTIFY naming the connector ('' for every connector), which they listen for; on SQLite,
    which has no channel, the wake-up counter their poll reads moves (they then look at every
    connector)."""
    dialect = dialect_of(conn)
    if dialect.notifies:
        dialect.notify(conn, connector_name)
        return
    bumped = conn.execute(_BUMP_WAKEUPS).rowcount
    if not bumped:
        conn.execute(setting_table.insert().values(key=WAKE_KEY, value="1"))


_BUMP_WAKEUPS = (
    setting_table.update()
    .where(setting_table.c.key == WAKE_KEY)
    .values(value=sa.cast(sa.cast(setting_table.c.value, sa.Integer) + 1, sa.String))
)


def claim_key(conn: sa.Connection, row: dict[str, Any], task_id: int) -> int | None:
    """Record the task's idempotency key; the first task's id when the key was taken (the
    key's primary key serialises concurrent twins)."""
    key = {"connector_id": row["connector_id"], "idempotency_key": row["idempotency_key"]}
    claim = {**key, "task_id": task_id, "created_at": row["created_at"]}
    if conn.execute(_BY_DIALECT[dialect_of(conn)].claim_key, claim).scalar() is not None:
        return None
    return int(conn.execute(_KEY_LOOKUP, key).scalar_one())


def queued_at_least(conn: sa.Connection, connector_id: int, count: int) -> bool:
    """Whether the connector has ``count`` or more tasks queued, without counting a long
    queue: the span of its task ids bounds the count from above (two index probes), and only
    a span that reaches ``count`` is checked exactly, by reading at most ``count`` index
    entries."""
    if count <= 0:
        return True
    t = task_table
    low, high = conn.execute(
        sa.select(sa.func.min(t.c.task_id), sa.func.max(t.c.task_id)).where(
            t.c.connector_id == connector_id
        )
    ).one()
    if low is None or int(high) - int(low) + 1 < count:
        return False
    nth = conn.execute(
        sa.select(t.c.task_id)
        .where(t.c.connector_id == connector_id)
        .order_by(t.c.task_id)
        .offset(count - 1)
        .limit(1)
    ).first()
    return nth is not None
