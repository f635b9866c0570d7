"""The dashboard's charts: per connector and per time bucket, tasks applied, failed attempts
and the queue depth, aggregated in the database (GROUP BY over bucket numbers), never row by
row in Python.

A window is ``buckets`` buckets of ``width`` seconds from ``start`` (epoch seconds). A bucket
number is ``(epoch seconds of a time - start) // width``, in integers on both backends
(``Dialect.epoch_seconds``), so a time on a boundary opens its bucket, exactly. What is read:

- applied: records (``syncbus_history``) finished in the bucket as ``applied`` or
  ``coalesced`` (a coalesced task's values were applied by the task it was folded into);
- failed: error-log entries timed in the bucket: the sync log of queued tasks, and the
  ``errors`` list of records (a finished task's sync log, moved into its record; a task
  dropped on error has the error that dropped it there). Each failed attempt is one entry,
  so a task that failed three times counts three; a quarantine's entry counts too;
- queue depth at a bucket's end: tasks logged before it and not finished before it, i.e.
  queued tasks logged before it plus records logged before it and finished at or after it.

Records are found through the ``finished_at`` index: only those finished in the window (or
after its start) are read, however long the history. Queued tasks and the sync log are read
whole (their size is the queue's, not the history's).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from syncbus.store.dialect import dialect_of
from syncbus.store.tables import connector_table as c
from syncbus.store.tables import history_table as h
from syncbus.store.tables import sync_log_table as s
from syncbus.store.tables import task_table as t

APPLIED_STATES = ("applied", "coalesced")
BEFORE = -1  # the bucket number of a time before the window
# GROUP BY the first columns by position: the bucket expression holds bound parameters,
# which PostgreSQL would not match with a repeated copy of it.
_BY_NAME_AND_BUCKET: tuple[sa.ColumnElement[Any], ...] = (
    sa.literal_column("1"),
    sa.literal_column("2"),
)
_BY_NAME_AND_BUCKETS = (*_BY_NAME_AND_BUCKET, sa.literal_column("3"))


@dataclass
class Activity:
    """One connector's counts, one number per bucket, oldest bucket first."""

    applied: list[int]
    failed: list[int]
    depth: list[int]  # tasks queued at the bucket's end


@dataclass
class _Window:
    start: int
    width: int
    buckets: int
    begins: dt.datetime = field(init=False)
    ends: dt.datetime = field(init=False)

    def __post_init__(self) -> None:
        self.begins = dt.datetime.fromtimestamp(self.start, dt.UTC)
        self.ends = dt.datetime.fromtimestamp(self.start + self.width * self.buckets, dt.UTC)


def activity(conn: sa.Connection, start: int, width: int, buckets: int) -> dict[str, Activity]:
    """Per connector name (those with anything in the window or queued): its counts over
    ``buckets`` buckets of ``width`` seconds from epoch ``start``."""
    w = _Window(start, width, buckets)
    out: dict[str, Activity] = defaultdict(
        lambda: Activity([0] * buckets, [0] * buckets, [0] * buckets)
    )
    changes: dict[str, list[int]] = defaultdict(lambda: [0] * (buckets + 1))  # [before, b0, ...]
    for name, finished, logged, applied, count in conn.execute(_records(conn, w)):
        if finished is not None:
            out[name].applied[finished] += int(applied)
            changes[name][finished + 1] -= int(count)
        if logged is not None:
            changes[name][logged + 1] += int(count)
    for name, bucket, count in _rows(conn, _queued(conn, w)):
        changes[name][bucket + 1] += count
    for name, bucket, count in _rows(conn, _record_errors(conn, w), _queued_errors(conn, w)):
        out[name].failed[bucket] += count
    for name, steps in changes.items():
        depth, total = out[name].depth, steps[0]
        for i in range(buckets):
            total += steps[i + 1]
            depth[i] = total
    return dict(out)


def _rows(conn: sa.Connection, *stmts: sa.Select[Any]) -> Iterable[tuple[str, int, int]]:
    for stmt in stmts:
        for name, bucket, count in conn.execute(stmt):
            yield str(name), int(bucket), int(count)


def _bucket(conn: sa.Connection, w: _Window, value: Any) -> sa.ColumnElement[int]:
    seconds = dialect_of(conn).epoch_seconds(value)
    return (seconds - sa.literal(w.start, sa.BigInteger)) // sa.literal(w.width, sa.Integer)


def _clamped(conn: sa.Connection, w: _Window, column: Any) -> sa.ColumnElement[int]:
    """A time's bucket number, or BEFORE for a time before the window."""
    return sa.case((column < w.begins, BEFORE), else_=_bucket(conn, w, column))


def _records(conn: sa.Connection, w: _Window) -> sa.Select[Any]:
    """Records finished in the window or after its start, in one pass over the
    ``finished_at`` index, grouped by the bucket they finished in (NULL: after the window) and
    the bucket their task was logged in (BEFORE: before the window; NULL: after it): how many
    were applied, how many in all."""
    finished = sa.case(
        (h.c.finished_at >= w.ends, sa.null()), else_=_bucket(conn, w, h.c.finished_at)
    ).label("finished")
    logged = sa.case(
        (h.c.logged_at < w.begins, BEFORE),
        (h.c.logged_at >= w.ends, sa.null()),
        else_=_bucket(conn, w, h.c.logged_at),
    ).label("logged")
    applied = sa.func.sum(sa.case((h.c.state.in_(APPLIED_STATES), 1), else_=0))
    return (
        sa.select(h.c.connector_name, finished, logged, applied, sa.func.count())
        .where(h.c.finished_at >= w.begins)
        .group_by(*_BY_NAME_AND_BUCKETS)
    )


def _queued(conn: sa.Connection, w: _Window) -> sa.Select[Any]:
    """Queued tasks by the bucket they were logged in (BEFORE: before the window)."""
    bucket = _clamped(conn, w, t.c.created_at).label("bucket")
    return (
        sa.select(c.c.connector_name, bucket, sa.func.count())
        .select_from(t.join(c, c.c.connector_id == t.c.connector_id))
        .where(t.c.created_at < w.ends)
        .group_by(*_BY_NAME_AND_BUCKET)
    )


def _record_errors(conn: sa.Connection, w: _Window) -> sa.Select[Any]:
    """Entries of the error logs of records, by bucket: a record finished before the window
    has none in it, so the ``finished_at`` index bounds the rows read."""
    entries, at = dialect_of(conn).json_entries(h.c.errors)
    seconds = dialect_of(conn).epoch_seconds(at)
    bucket = (seconds - w.start) // w.width
    inside = sa.and_(seconds >= w.start, seconds < w.start + w.width * w.buckets)
    return (
        sa.select(h.c.connector_name, bucket.label("bucket"), sa.func.count())
        .select_from(h)
        .join(entries, sa.true())
        .where(h.c.finished_at >= w.begins, h.c.errors.is_not(None), inside)
        .group_by(*_BY_NAME_AND_BUCKET)
    )


def _queued_errors(conn: sa.Connection, w: _Window) -> sa.Select[Any]:
    """Sync-log entries (failed attempts of queued tasks) in the window, by bucket."""
    bucket = _bucket(conn, w, s.c.time).label("bucket")
    return (
        sa.select(c.c.connector_name, bucket, sa.func.count())
        .select_from(
            s.join(t, t.c.task_id == s.c.task_id).join(c, c.c.connector_id == t.c.connector_id)
        )
        .where(s.c.time >= w.begins, s.c.time < w.ends)
        .group_by(*_BY_NAME_AND_BUCKET)
    )
