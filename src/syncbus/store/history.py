"""History (CONTRACT §10): the record a task leaves when it leaves the queue, read back by
task or by object, and pruned after the retention; the idempotency keys' retention too.

A finished task's row is copied from the queue row by ``INSERT ... SELECT`` in the
transaction that removes it, so its external object and payload never travel through Python
on the hot path; what only the run knows (state, resolved ids, changes, errors) comes as one
JSON document per batch, which the database turns into rows (``Dialect.json_rows``) and joins
to the queue rows: one statement, one parameter. (An ``executemany`` would be pipelined on
PostgreSQL, after which the server leaves its idle-in-transaction timeout unarmed: see
``Dialect.pipelined_executemany``; arrays cost psycopg Python work per element.)
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from syncbus.store.db import IN_CHUNK
from syncbus.store.dialect import Dialect, dialect_of
from syncbus.store.tables import (
    connector_table,
    history_table,
    idempotency_table,
    sync_log_table,
    task_table,
)

h, t, c = history_table, task_table, connector_table

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
    h.c.idempotency_key,
]


def _record(given: dict[str, sa.ColumnElement[Any]], rows: sa.FromClause) -> Any:
    """INSERT ... SELECT of records: queue columns and the ``given`` ones (the run's, from
    ``rows``), each joined to its queue row by its ``tid``."""
    finished = sa.bindparam("finished", type_=h.c.finished_at.type)
    return h.insert().from_select(
        _TARGETS,
        sa.select(
            t.c.task_id,
            c.c.connector_name,
            t.c.task_type,
            t.c.data_type,
            t.c.process_type,
            t.c.title,
            t.c.object_type,
            t.c.class_name,
            given["code_name"],
            t.c.site_name,
            t.c.lane,
            given["state"],
            t.c.created_at,
            finished,
            t.c.external,
            t.c.data,
            given["resolved"],
            given["changes"],
            given["errors"],
            given["into"],
            t.c.idempotency_key,
        )
        .select_from(rows)
        .join(t, t.c.task_id == given["tid"])
        .join(c, c.c.connector_id == t.c.connector_id),
    )


# A batch's records go as one JSON document (a list of objects with these keys), joined to
# the queue rows; the nested ones (None) are stored as their JSON text.
ENTRY_KEYS: dict[str, sa.types.TypeEngine[Any] | None] = {
    "tid": sa.BigInteger(),
    "code_name": sa.Text(),
    "state": sa.Text(),
    "resolved": None,
    "changes": None,
    "errors": None,
    "into": sa.BigInteger(),
}
_NESTED = [key for key, kind in ENTRY_KEYS.items() if kind is None]
# The same with each nested value sent as a JSON string holding its JSON text.
_AS_TEXT: dict[str, sa.types.TypeEngine[Any] | None] = {
    key: kind or sa.Text() for key, kind in ENTRY_KEYS.items()
}
_DOCUMENT = sa.bindparam("batch", type_=sa.Text)
_STATEMENTS: dict[tuple[str, bool], Any] = {}


def _statement(dialect: Dialect, as_text: bool) -> Any:
    """The INSERT ... SELECT of a batch's records (built once per backend and form)."""
    found = _STATEMENTS.get((dialect.name, as_text))
    if found is None:
        rows, given = dialect.json_rows(_DOCUMENT, _AS_TEXT if as_text else ENTRY_KEYS)
        found = _STATEMENTS[dialect.name, as_text] = _record(given, rows)
    return found


# Built once: ``json.dumps`` with options builds a new encoder on every call. Values JSON
# has no type for (times, decimals) are written as their ``str``.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"), allow_nan=False)
_LENIENT = json.JSONEncoder(default=str, separators=(",", ":"))


def record(conn: sa.Connection, entries: Sequence[dict[str, Any]], finished: dt.datetime) -> None:
    """Write the records of tasks finished at ``finished``, each from its queue row (still
    there: call this before the rows are removed). ``entries`` have the keys
    ``ENTRY_KEYS``: ``changes``, ``resolved`` and ``errors`` as values, not JSON text.

    One statement per batch whose values travel as one JSON document: encoding it is one
    call into the C encoder, where a parameter per value (an ``executemany``, or arrays on
    PostgreSQL, which psycopg quotes element by element in Python) cost more than the insert
    itself."""
    if not entries:
        return
    try:
        document = _ENCODER.encode(entries)
    except ValueError:
        # A non-finite float (an old value written outside the bus): JSON has none, so it is
        # recorded as the string "NaN", "Infinity" or "-Infinity".
        entries = json.loads(_LENIENT.encode(entries), parse_constant=str)
        document = _ENCODER.encode(entries)
    dialect = dialect_of(conn)
    as_text = dialect.json_refuses_nul and "\\u0000" in document
    if as_text:
        # A NUL in a string of a nested value (valid JSON, refused by the database's parser
        # where it cannot be text): those values go as JSON strings holding their JSON text,
        # where the NUL is an escape the database reads as six characters.
        entries = [
            {**e, **{k: None if e[k] is None else _ENCODER.encode(e[k]) for k in _NESTED}}
            for e in entries
        ]
        document = _ENCODER.encode(entries)
    conn.execute(_statement(dialect, as_text), {"batch": document, "finished": finished})


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


def carried(conn: sa.Connection, task_ids: Iterable[int]) -> dict[int, tuple[int, ...]]:
    """The tasks coalesced into each of these carriers, ascending (only carriers are keys)."""
    ids = sorted(set(task_ids))
    out: dict[int, list[int]] = defaultdict(list)
    for start in range(0, len(ids), IN_CHUNK):
        stmt = (
            sa.select(h.c.into_task_id, h.c.task_id)
            .where(h.c.into_task_id.in_(ids[start : start + IN_CHUNK]))
            .order_by(h.c.task_id)
        )
        for into, task_id in conn.execute(stmt):
            out[int(into)].append(int(task_id))
    return {carrier: tuple(absorbed) for carrier, absorbed in out.items()}


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


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
