"""The baselines that run beside the bus in the same process, on the same database.

* raw insert floors (logging): the very rows the bus logged, inserted into a table of the same
  shape (same columns, index and foreign key to the connector table), either one INSERT and one
  COMMIT per row (like one ``process_external_task`` call), or ``executemany`` in transactions
  of the bus's batch size;
* raw SQL floor (processing): a hand-written loop over a copy of the bus's queue (the same JSON
  payloads) that per task does what the bus must do at a minimum (see ``rawapply``), and deletes
  the batch's queue rows, in one transaction per batch of the bus's batch size.

It also keeps a copy of the bus's queue rows as logged (``snapshot_queue``), so the process path
can drain the very same queue a second time, with history off (``restore_queue``), and counts the
history records the timed tasks left (``history_counts``, ``history_states``).

All use the bus's own engine, so connection settings and durability are the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from syncbus.bench.rawapply import RawApplier
from syncbus.store.db import BigId
from syncbus.store.tables import history_table, task_table

bench_metadata = sa.MetaData()
# The columns a logging call fills in (the others are written when the task runs or fails).
_LOG_COLUMNS = tuple(
    c.name for c in task_table.c if c.name not in ("task_id", "error_message", "last_run_at")
)


def _copy_column(column: sa.Column[Any]) -> sa.Column[Any]:
    """A column like one of the task table's; a foreign key points at the bus's own table."""
    keys = [sa.ForeignKey(fk.column, ondelete=fk.ondelete) for fk in column.foreign_keys]
    return sa.Column(column.name, column.type, *keys, nullable=column.nullable)


def _payload_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        bench_metadata,
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        *(_copy_column(task_table.c[c]) for c in ("task_type", "site_name", "data")),
        sqlite_autoincrement=True,
    )


# The payloads the bus stored, in task-id order (kept for the peers), and the raw SQL floor's
# queue (a copy of them that the floor drains).
payloads = _payload_table("bench_payload")
queue_copy = _payload_table("bench_queue")


def _log_table(name: str) -> sa.Table:
    """A table shaped like the bus's task table: its columns that a logged task fills in (same
    names, types and nullability, the same foreign key to the bus's connector table) and its
    queue index, under an id of its own."""
    return sa.Table(
        name,
        bench_metadata,
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        *(_copy_column(task_table.c[c]) for c in _LOG_COLUMNS),
        sa.Index(f"ix_{name}_queue", "connector_id", "id"),
        sqlite_autoincrement=True,
    )


log_single = _log_table("bench_log_single")
log_many = _log_table("bench_log_many")
# The bus's queue rows as logged, every column (no keys or indexes: a plain copy to restore).
task_copy = sa.Table(
    "bench_task_copy", bench_metadata, *(sa.Column(c.name, c.type) for c in task_table.c)
)
BENCH_TABLES = (payloads, queue_copy, log_single, log_many, task_copy)

Progress = Callable[[int], None]


def create_tables(engine: sa.Engine) -> None:
    """(Re)create the bench's own tables."""
    with engine.begin() as conn:
        bench_metadata.drop_all(conn, tables=list(BENCH_TABLES))
        bench_metadata.create_all(conn, tables=list(BENCH_TABLES))


def copy_payloads(engine: sa.Engine) -> int:
    """Keep the payloads of the bus's queued tasks (before it processes them)."""
    t = task_table
    with engine.begin() as conn:
        src = sa.select(t.c.task_type, t.c.site_name, t.c.data).order_by(t.c.task_id)
        conn.execute(payloads.insert().from_select(["task_type", "site_name", "data"], src))
    return _count(engine, payloads)


def snapshot_queue(engine: sa.Engine) -> tuple[int, int, int]:
    """Keep a copy of the bus's queue rows (every column). (rows, first id, last id)"""
    with engine.begin() as conn:
        conn.execute(task_copy.delete())
        conn.execute(task_copy.insert().from_select(task_table.c.keys(), sa.select(task_table)))
        t = task_copy.c.task_id
        n, first, last = conn.execute(
            sa.select(sa.func.count(), sa.func.min(t), sa.func.max(t))
        ).one()
    return int(n), int(first or 0), int(last or 0)


def restore_queue(engine: sa.Engine) -> int:
    """Put the kept queue rows back into the bus's (drained) queue, same ids, same columns."""
    with engine.begin() as conn:
        conn.execute(task_table.insert().from_select(task_copy.c.keys(), sa.select(task_copy)))
    return _count(engine, task_table)


def history_counts(engine: sa.Engine, first: int, last: int) -> tuple[int, int]:
    """(records, records in state applied) of the tasks with ids first..last."""
    h = history_table
    applied = sa.func.count().filter(h.c.state == "applied")
    stmt = sa.select(sa.func.count(), applied).where(h.c.task_id.between(first, last))
    with engine.connect() as conn:
        total, done = conn.execute(stmt).one()
    return int(total), int(done or 0)


def history_states(engine: sa.Engine, first: int, last: int) -> dict[str, int]:
    """How many history records of the tasks first..last are in each state."""
    h = history_table
    stmt = (
        sa.select(h.c.state, sa.func.count())
        .where(h.c.task_id.between(first, last))
        .group_by(h.c.state)
    )
    with engine.connect() as conn:
        return {str(state): int(count) for state, count in conn.execute(stmt)}


def forget_history(engine: sa.Engine, first: int, last: int) -> None:
    """Remove the records of the tasks with ids first..last (before they run again)."""
    h = history_table
    with engine.begin() as conn:
        conn.execute(h.delete().where(h.c.task_id.between(first, last)))


def fill_queue(engine: sa.Engine) -> int:
    """The raw SQL floor's queue: the same payloads, in the same order."""
    p = payloads
    with engine.begin() as conn:
        conn.execute(queue_copy.delete())
        src = sa.select(p.c.task_type, p.c.site_name, p.c.data).order_by(p.c.id)
        conn.execute(queue_copy.insert().from_select(["task_type", "site_name", "data"], src))
    return _count(engine, queue_copy)


def payload_rows(engine: sa.Engine, limit: int, chunk: int = 1_000) -> Iterator[list[Any]]:
    """The first ``limit`` stored payloads, in chunks (read outside the timed parts)."""
    p = payloads
    after, left = 0, limit
    while left > 0:
        with engine.connect() as conn:
            stmt = (
                sa.select(p.c.id, p.c.task_type, p.c.site_name, p.c.data)
                .where(p.c.id > after)
                .order_by(p.c.id)
                .limit(min(chunk, left))
            )
            rows = list(conn.execute(stmt))
        if not rows:
            return
        after, left = rows[-1].id, left - len(rows)
        yield rows


def logged_rows(engine: sa.Engine, chunk: int) -> Iterator[list[dict[str, Any]]]:
    """The rows the bus logged, in chunks (read outside the timed parts)."""
    cols = [task_table.c[c] for c in _LOG_COLUMNS]
    after = 0
    while True:
        with engine.connect() as conn:
            stmt = (
                sa.select(task_table.c.task_id, *cols)
                .where(task_table.c.task_id > after)
                .order_by(task_table.c.task_id)
                .limit(chunk)
            )
            rows = conn.execute(stmt).mappings().all()
        if not rows:
            return
        after = rows[-1]["task_id"]
        yield [{c: r[c] for c in _LOG_COLUMNS} for r in rows]


def insert_single(engine: sa.Engine, progress: Progress) -> tuple[float, int]:
    """One INSERT ... RETURNING id and one COMMIT per row: the floor of a single-task log call."""
    stmt = log_single.insert().returning(log_single.c.id)
    seconds, done = 0.0, 0
    for rows in logged_rows(engine, 1_000):
        start = time.perf_counter()
        for row in rows:
            with engine.begin() as conn:
                conn.execute(stmt, row).scalar_one()
        seconds += time.perf_counter() - start
        done += len(rows)
        progress(done)
    return seconds, _count(engine, log_single)


def insert_many(engine: sa.Engine, batch_size: int, progress: Progress) -> tuple[float, int]:
    """executemany of the rows, one transaction per ``batch_size`` rows."""
    stmt = log_many.insert()
    seconds, done = 0.0, 0
    for rows in logged_rows(engine, 1_000):
        start = time.perf_counter()
        for i in range(0, len(rows), batch_size):
            with engine.begin() as conn:
                conn.execute(stmt, rows[i : i + batch_size])
        seconds += time.perf_counter() - start
        done += len(rows)
        progress(done)
    return seconds, _count(engine, log_many)


def raw_process(
    engine: sa.Engine, applier: RawApplier, batch_size: int, progress: Progress
) -> tuple[float, int]:
    """Drain the queue copy in order, ``batch_size`` tasks per transaction. (seconds, applied)"""
    q = queue_copy
    read = (
        sa.select(q.c.id, q.c.task_type, q.c.site_name, q.c.data)
        .where(q.c.id > sa.bindparam("after"))
        .order_by(q.c.id)
        .limit(batch_size)
    )
    remove = q.delete().where(q.c.id <= sa.bindparam("upto"))
    after, applied = 0, 0
    start = time.perf_counter()
    while True:
        with engine.begin() as conn:
            rows = conn.execute(read, {"after": after}).all()
            if not rows:
                break
            for row in rows:
                applier.apply(conn, row.task_type, row.site_name, row.data)
            conn.execute(remove, {"upto": rows[-1].id})
        after = rows[-1].id
        applied += len(rows)
        progress(applied)
    return time.perf_counter() - start, applied


def queued_in_copy(engine: sa.Engine) -> int:
    return _count(engine, queue_copy)


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
