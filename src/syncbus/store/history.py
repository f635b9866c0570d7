"""History (CONTRACT §10): the record a task leaves when it leaves the queue, read back by
task or by object, and pruned after the retention; the idempotency keys' retention too.

A finished task's row is copied from the queue row by ``INSERT ... SELECT`` in the
transaction that removes it, so its external object and payload never travel through Python
on the hot path; what only the run knows (state, resolved ids, changes, errors) comes as
parameters. On SQLite one statement is executed many times (sqlite3 loops in C); on
PostgreSQL a batch's records go in one statement whose parameters are arrays, joined to the
queue rows by ``unnest`` (an ``executemany`` there would be pipelined, after which the server
leaves its idle-in-transaction timeout unarmed; see ``Dialect.pipelined_executemany``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from syncbus.store.db import IN_CHUNK
from syncbus.store.dialect import dialect_of
from syncbus.store.tables import (
    connector_table,
    history_table,
    idempotency_table,
    sync_log_table,
    task_table,
)

h, t, c = history_table, task_table, connector_table

# The parameters ``record`` takes for each finished task.
ENTRY_KEYS = ("tid", "state", "finished", "code_name", "resolved", "changes", "errors", "into")

_TARGETS = [
    h.c.task_id,
    h.c.connector_name,
    h.c.task_type,
    h.c.data_type,
    h.c.process_type,
    h.c.title,
    h.c.object_type,
    h.c.class_name,
    h.c.code_name,
    h.c.site_name,
    h.c.lane,
    h.c.state,
    h.c.logged_at,
    h.c.finished_at,
    h.c.external,
    h.c.data,
    h.c.resolved,
    h.c.changes,
    h.c.errors,
    h.c.into_task_id,
]


def _record(given: Any, join: Any) -> Any:
    """INSERT ... SELECT of records: queue columns and the ``given`` ones (the run's), the
    queue rows found by ``join`` (a select's ``join``/``where`` step)."""
    finished = sa.bindparam("finished", type_=h.c.finished_at.type)
    return h.insert().from_select(
        _TARGETS,
        join(
            sa.select(
                t.c.task_id,
                c.c.connector_name,
                t.c.task_type,
                t.c.data_type,
                t.c.process_type,
                t.c.title,
                t.c.object_type,
                t.c.class_name,
                given.code_name,
                t.c.site_name,
                t.c.lane,
                given.state,
                t.c.created_at,
                finished,
                t.c.external,
                t.c.data,
                given.resolved,
                given.changes,
                given.errors,
                given.into,
            ).join(c, c.c.connector_id == t.c.connector_id)
        ),
    )


class _Params:
    """Each record's own values as named parameters (executed once per record)."""

    code_name = sa.bindparam("code_name", type_=sa.String)
    state = sa.bindparam("state", type_=sa.String)
    resolved = sa.bindparam("resolved", type_=sa.Text)
    changes = sa.bindparam("changes", type_=sa.Text)
    errors = sa.bindparam("errors", type_=sa.Text)
    into = sa.bindparam("into", type_=h.c.into_task_id.type)


_RECORD = _record(_Params, lambda q: q.where(t.c.task_id == sa.bindparam("tid")))

# PostgreSQL: the records' values as arrays, one element per record, unnested beside the
# queue rows (one statement for a batch).
_ARRAYS = ("tid", "code_name", "state", "resolved", "changes", "errors", "into")
_TEXT_ARRAY = postgresql.ARRAY(sa.Text)
_ID_ARRAY = postgresql.ARRAY(sa.BigInteger)
_GIVEN = (
    sa.func.unnest(
        *(
            sa.bindparam(name, type_=_ID_ARRAY if name in ("tid", "into") else _TEXT_ARRAY)
            for name in _ARRAYS
        )
    )
    .table_valued(*_ARRAYS)
    .render_derived(name="given")
)
_RECORD_ARRAYS = _record(_GIVEN.c, lambda q: q.join(_GIVEN, _GIVEN.c.tid == t.c.task_id))


_COMPILED: dict[str, tuple[str, tuple[str, ...] | None, Any]] = {}


def _compiled(dialect: sa.Dialect) -> tuple[str, tuple[str, ...] | None, Any]:
    """``_RECORD`` as the driver takes it (compiled once per backend): its SQL, the order of
    its positional parameters (None: named), and how the driver takes a finish time."""
    found = _COMPILED.get(dialect.name)
    if found is None:
        compiled = _RECORD.compile(dialect=dialect)
        order = tuple(compiled.positiontup) if compiled.positiontup else None
        stamp = h.c.finished_at.type.bind_processor(dialect)
        found = _COMPILED[dialect.name] = (str(compiled), order, stamp)
    return found


def record(conn: sa.Connection, entries: Sequence[dict[str, Any]]) -> None:
    """Write the records of finished tasks, each from its queue row (still there: call this
    before the rows are removed). ``entries`` have the keys ``ENTRY_KEYS``.

    Straight to the driver's ``executemany``: a batch's records share one statement, and
    SQLAlchemy's handling of each row's parameters cost as much as the insert itself."""
    if not entries:
        return
    if dialect_of(conn).pipelined_executemany:
        # One statement (see the module's docstring); a batch's records share their finish
        # time, and a record's columns come from the queue row, which the join finds.
        finished = {e["finished"] for e in entries}
        if len(finished) == 1:
            arrays: dict[str, Any] = {name: [e[name] for e in entries] for name in _ARRAYS}
            conn.execute(_RECORD_ARRAYS, {**arrays, "finished": finished.pop()})
            return
    sql, order, stamp = _compiled(conn.dialect)
    rows: list[Any] = []
    for entry in entries:
        if stamp is not None:
            entry = {**entry, "finished": stamp(entry["finished"])}
        rows.append(entry if order is None else tuple(entry[k] for k in order))
    conn.exec_driver_sql(sql, rows)


def error_logs(conn: sa.Connection, task_ids: Iterable[int]) -> dict[int, list[list[str]]]:
    """The sync logs of these tasks, oldest entry first, as a record keeps them."""
    ids = sorted(set(task_ids))
    out: dict[int, list[list[str]]] = defaultdict(list)
    s = sync_log_table
    for start in range(0, len(ids), IN_CHUNK):
        stmt = (
            sa.select(s.c.task_id, s.c.time, s.c.error_message)
            .where(s.c.task_id.in_(ids[start : start + IN_CHUNK]))
            .order_by(s.c.log_id)
        )
        for task_id, time, message in conn.execute(stmt):
            out[int(task_id)].append([_iso(time), str(message)])
    return out


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


# Built once: ``json.dumps`` with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


def dumps(value: Any) -> str | None:
    """JSON for a record's column (None stays NULL)."""
    return None if value is None else _ENCODER.encode(value)


# -- reading ----------------------------------------------------------------------------------
def finished(conn: sa.Connection, task_id: int) -> Any:
    """A finished task's record row, or None."""
    return conn.execute(sa.select(h).where(h.c.task_id == task_id)).first()


_QUEUED = (
    sa.select(t, c.c.connector_name)
    .join(c, c.c.connector_id == t.c.connector_id)
    .where(t.c.task_id == sa.bindparam("tid"))
)


def queued(conn: sa.Connection, task_id: int) -> Any:
    """A queued task's row (every column, with its connector's name), or None."""
    return conn.execute(_QUEUED, {"tid": task_id}).first()


def of_object(
    conn: sa.Connection,
    object_type: str,
    code_name: str,
    site_name: str | None,
    states: Sequence[str],
    limit: int,
) -> list[Any]:
    """Records of the tasks in ``states`` about one object, newest first."""
    stmt = sa.select(h).where(
        h.c.object_type == object_type, h.c.code_name == code_name, h.c.state.in_(states)
    )
    if site_name is not None:
        stmt = stmt.where(sa.or_(h.c.site_name == site_name, h.c.site_name.is_(None)))
    return list(conn.execute(stmt.order_by(h.c.task_id.desc()).limit(limit)))


# -- retention --------------------------------------------------------------------------------
def prune(conn: sa.Connection, before: dt.datetime, limit: int) -> int:
    """Delete at most ``limit`` records of tasks finished before ``before``; how many went."""
    oldest = (
        sa.select(h.c.task_id)
        .where(h.c.finished_at < before)
        .order_by(h.c.finished_at)
        .limit(limit)
        .scalar_subquery()
    )
    return int(conn.execute(h.delete().where(h.c.task_id.in_(oldest))).rowcount)


def prune_keys(conn: sa.Connection, before: dt.datetime, limit: int) -> int:
    """Forget at most ``limit`` idempotency keys first seen before ``before`` whose task has
    left the queue (a key of a queued task is kept, whatever its age); how many went."""
    k = idempotency_table
    gone = ~sa.exists().where(t.c.task_id == k.c.task_id)
    old = (
        sa.select(k.c.connector_id, k.c.idempotency_key)
        .where(k.c.created_at < before, gone)
        .limit(limit)
    )
    keys = [tuple(r) for r in conn.execute(old)]
    if not keys:
        return 0
    stmt = k.delete().where(sa.tuple_(k.c.connector_id, k.c.idempotency_key).in_(keys))
    return int(conn.execute(stmt).rowcount)
