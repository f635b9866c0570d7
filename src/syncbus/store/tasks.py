"""The task queue as a run sees it: claim the next batch, load it (locked), take tasks out,
mark them, find one task for an admin action, and what to poll for new tasks. Under
``Ordering.ENTITY`` also the lanes: scan the queue's front, lock lanes, wait and wake."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable
from typing import Any

import sqlalchemy as sa

from syncbus.enums import ProcessType
from syncbus.store.db import IN_CHUNK, as_utc, utcnow
from syncbus.store.dialect import dialect_of, prebuilt
from syncbus.store.tables import WAKE_KEY, connector_table, task_lane_table, task_table

t, tl = task_table, task_lane_table

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
    t.c.attempts,
    t.c.next_attempt_at,
    t.c.traceparent,  # the producer's trace context: processing joins it
)


# What a run of an ENTITY connector reads besides: the lane and the wait.
LANE_COLUMNS = (*RUN_COLUMNS, t.c.lane, t.c.awaits, t.c.waiting_since, t.c.last_run_at)


def _in_range(stmt: sa.Select[Any], connector_id: int, after: int, upto: int) -> sa.Select[Any]:
    """The connector's tasks with ids in (after, upto], in order."""
    return stmt.where(
        t.c.connector_id == connector_id, t.c.task_id > after, t.c.task_id <= upto
    ).order_by(t.c.task_id)


def next_ids(
    conn: sa.Connection, connector_id: int, after: int, limit: int, max_bytes: int
) -> tuple[list[int], bool]:
    """The ids of the connector's next tasks after ``after``, in order: at most ``limit``
    and, past the first, no more than ``max_bytes`` of stored payload; and whether the first
    is an ``Error`` task, which stops the queue where it stands: the batch is then that task
    alone (nothing behind it can run, so nothing behind it is in flight)."""
    size = dialect_of(conn).byte_length(t.c.data)
    rows = conn.execute(
        sa.select(t.c.task_id, size, t.c.process_type)
        .where(t.c.connector_id == connector_id, t.c.task_id > after)
        .order_by(t.c.task_id)
        .limit(limit)
    ).all()
    if rows and rows[0][2] == ProcessType.ERROR.value:
        return [int(rows[0][0])], True
    ids: list[int] = []
    total = 0
    for task_id, stored, _ in rows:
        total += int(stored or 0)
        if ids and total > max_bytes:
            break
        ids.append(int(task_id))
    return ids, False


def load_batch(conn: sa.Connection, connector_id: int, after: int, upto: int) -> list[Any]:
    """The batch's rows, locked without waiting: an admin action holding one of them makes
    the batch fail with a lock-wait error (transient: tried again shortly), never wait."""
    stmt = _in_range(sa.select(*RUN_COLUMNS), connector_id, after, upto)
    return list(conn.execute(dialect_of(conn).lock_nowait(stmt)))


def head(conn: sa.Connection, connector_id: int) -> Any:
    """The connector's first queued task (id and process type), or None."""
    stmt = (
        sa.select(t.c.task_id, t.c.process_type)
        .where(t.c.connector_id == connector_id)
        .order_by(t.c.task_id)
        .limit(1)
    )
    return conn.execute(stmt).first()


def ids_in_range(conn: sa.Connection, connector_id: int, after: int, upto: int) -> list[int]:
    stmt = _in_range(sa.select(t.c.task_id), connector_id, after, upto)
    return [int(i) for i in conn.execute(stmt).scalars()]


def row(conn: sa.Connection, task_id: int) -> Any:
    """One task's row as a run reads it (with its lane and wait), or None."""
    return conn.execute(sa.select(*LANE_COLUMNS).where(t.c.task_id == task_id)).first()


def lock_row(conn: sa.Connection, task_id: int) -> Any:
    """One task's row (with its lane and connector id), locked for an admin action without waiting
    (the caller turns the lock-wait error into ``TaskBusyError``). None when not queued."""
    stmt = sa.select(*LANE_COLUMNS, t.c.connector_id).where(t.c.task_id == task_id)
    return conn.execute(dialect_of(conn).lock_nowait(stmt)).first()


def remove(conn: sa.Connection, task_ids: Iterable[int]) -> int:
    """Take tasks out of the queue (their sync logs go with them); how many there were."""
    ids = list(task_ids)
    if not ids:
        return 0
    dialect = dialect_of(conn)
    stmt = prebuilt(
        t, ("remove", dialect.name), lambda: t.delete().where(dialect.any_of(t.c.task_id, "ids"))
    )
    return int(conn.execute(stmt, dialect.any_of_args(t.c.task_id, "ids", ids)).rowcount)


def set_process_type(conn: sa.Connection, task_id: int, process_type: ProcessType) -> None:
    conn.execute(t.update().where(t.c.task_id == task_id).values(process_type=process_type.value))


# The task-id counter plus the wake-up counter (``enqueue.notify_workers``): it moves when a
# task is logged or when another process asks the workers to look again.
_SQLITE_SEQUENCE = sa.text(
    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = :table), 0)"
    " + COALESCE((SELECT CAST(value AS INTEGER) FROM syncbus_setting WHERE key = :wake), 0)"
).bindparams(table=t.name, wake=WAKE_KEY)


def log_sequence(conn: sa.Connection) -> int | None:
    """A number that moves whenever anyone logs a task or wakes the workers, where the backend
    has one to poll (SQLite's task-id counter and wake-up counter); None where workers are
    woken by notifications instead."""
    if dialect_of(conn).notifies:
        return None
    value = conn.execute(_SQLITE_SEQUENCE).scalar()
    return None if value is None else int(value)


# -- lanes (Ordering.ENTITY) -------------------------------------------------------------


def scan_front(conn: sa.Connection, connector_id: int, after: int, limit: int) -> list[Any]:
    """The connector's next ``limit`` tasks after ``after``, in order, as lane scheduling
    reads them: id, lane, process type, wait, deaths, and stored size. No locks."""
    size = dialect_of(conn).byte_length(t.c.data)
    return list(
        conn.execute(
            sa.select(
                t.c.task_id,
                t.c.lane,
                t.c.process_type,
                t.c.awaits,
                t.c.waiting_since,
                t.c.last_run_at,
                t.c.deaths,
                size.label("size"),
            )
            .where(t.c.connector_id == connector_id, t.c.task_id > after)
            .order_by(t.c.task_id)
            .limit(limit)
        )
    )


def lock_lanes(
    conn: sa.Connection, connector_id: int, lanes: Collection[str | None]
) -> set[str | None] | None:
    """Take the lanes for this transaction: lock each lane's first task (its head), leaving
    out lanes whose head another transaction holds. The lanes taken; None where row locks do
    not exist (SQLite: a run holds the connector's lease, and with it every lane).

    A lane's head is its lowest queued task id; a later task never gets a lower id, so
    whoever holds the head holds the lane until it commits."""
    h = t.alias("head")
    heads = sa.select(sa.func.min(h.c.task_id)).where(h.c.connector_id == connector_id)
    taken: set[str | None] = set()
    named = [lane for lane in lanes if lane is not None]
    chunks: list[sa.ColumnElement[bool]] = [
        h.c.lane.in_(named[i : i + IN_CHUNK]) for i in range(0, len(named), IN_CHUNK)
    ]
    if len(named) != len(lanes):
        chunks.append(h.c.lane.is_(None))
    for where in chunks:
        stmt = dialect_of(conn).skip_locked(
            sa.select(t.c.lane).where(t.c.task_id.in_(heads.where(where).group_by(h.c.lane)))
        )
        if stmt is None:
            return None
        taken.update(conn.execute(stmt).scalars())
    return taken


def lock_heads(conn: sa.Connection, heads: list[int], limit: int) -> set[str | None] | None:
    """Take up to ``limit`` lanes by their heads (lowest ids first), locking each head by its
    primary key and skipping those another transaction holds or that are gone: the lanes
    taken. None where row locks do not exist (SQLite)."""
    taken: set[str | None] = set()
    for start in range(0, len(heads), IN_CHUNK):
        if len(taken) >= limit:
            break
        stmt = dialect_of(conn).skip_locked(
            sa.select(t.c.lane)
            .where(t.c.task_id.in_(heads[start : start + IN_CHUNK]))
            .order_by(t.c.task_id)
            .limit(limit - len(taken))
        )
        if stmt is None:
            return None
        taken.update(conn.execute(stmt).scalars())
    return taken


def queued_ids(conn: sa.Connection, ids: list[int]) -> set[int]:
    """Which of these tasks are still queued (no locks taken, none waited for)."""
    found: set[int] = set()
    for start in range(0, len(ids), IN_CHUNK):
        where = dialect_of(conn).one_of(t.c.task_id, ids[start : start + IN_CHUNK])
        found.update(int(i) for i in conn.execute(sa.select(t.c.task_id).where(where)).scalars())
    return found


def load_ids(conn: sa.Connection, ids: list[int]) -> list[Any]:
    """The rows of these tasks (those still queued), in order, locked without waiting, with
    their lanes and waits."""
    rows: list[Any] = []
    for start in range(0, len(ids), IN_CHUNK):
        stmt = sa.select(*LANE_COLUMNS).where(t.c.task_id.in_(ids[start : start + IN_CHUNK]))
        rows += conn.execute(dialect_of(conn).lock_nowait(stmt)).all()
    rows.sort(key=lambda r: r.task_id)
    return rows


# A queued task that cannot move by itself: an ERROR, or one that waits.
_STUCK = sa.or_(t.c.process_type == ProcessType.ERROR.value, t.c.awaits.is_not(None)).label("stuck")


def _by_lanes(
    conn: sa.Connection, lanes: Collection[str], query: Callable[[list[str]], Any]
) -> list[Any]:
    """``query(names)`` run for the lanes ``IN_CHUNK`` names at a time, its rows together."""
    names = list(lanes)
    rows: list[Any] = []
    for start in range(0, len(names), IN_CHUNK):
        rows += conn.execute(query(names[start : start + IN_CHUNK])).all()
    return rows


def queued_in_lanes(
    conn: sa.Connection, connector_id: int, lanes: Collection[str], below: int
) -> list[Any]:
    """The connector's queued tasks in these lanes with ids below ``below``: (lane, task_id,
    stuck), where ``stuck`` means it cannot move by itself (ERROR, or waiting)."""
    return _by_lanes(
        conn,
        lanes,
        lambda names: sa.select(t.c.lane, t.c.task_id, _STUCK).where(
            t.c.connector_id == connector_id, t.c.lane.in_(names), t.c.task_id < below
        ),
    )


def lane_writers(
    conn: sa.Connection, connector_id: int, lanes: Collection[str], below: int
) -> list[Any]:
    """The connector's queued SNAPSHOT tasks with ids below ``below`` that write an entity of
    these lanes as a child: (lane, task_id, stuck), ``stuck`` as in ``queued_in_lanes``."""
    return _by_lanes(
        conn,
        lanes,
        lambda names: (
            sa.select(tl.c.lane, tl.c.task_id, _STUCK)
            .join(t, t.c.task_id == tl.c.task_id)
            .where(tl.c.lane.in_(names), tl.c.task_id < below, t.c.connector_id == connector_id)
        ),
    )


def mark_waiting(conn: sa.Connection, task_id: int, waiting_for: str, awaits: str) -> None:
    """The task waits for an entity (the lane key ``awaits``); the clock of its
    ``dependency_timeout`` starts the first time it waits and is never reset."""
    conn.execute(
        t.update()
        .where(t.c.task_id == task_id)
        .values(
            waiting_for=waiting_for,
            awaits=awaits,
            waiting_since=sa.func.coalesce(t.c.waiting_since, utcnow()),
            last_run_at=utcnow(),
        )
    )


def count_waiting(conn: sa.Connection, connector_id: int) -> int:
    """How many of the connector's tasks wait for a missing reference (ENTITY)."""
    stmt = sa.select(sa.func.count()).where(
        t.c.awaits.is_not(None), t.c.connector_id == connector_id
    )
    return int(conn.execute(stmt).scalar_one())


def unwait(conn: sa.Connection, task_id: int) -> None:
    """The task need not wait any more (what it waited for exists); it keeps
    ``waiting_since``, the clock of its ``dependency_timeout``."""
    conn.execute(
        t.update()
        .where(t.c.task_id == task_id, t.c.awaits.is_not(None))
        .values(waiting_for=None, awaits=None)
    )


def wake(conn: sa.Connection, lanes: Collection[str]) -> list[Any]:
    """Tasks (of any connector) waiting for an entity in one of these lanes may run again:
    (connector_id, lane) of each task woken. Found by the index on ``awaits``."""
    names = list(lanes)
    woken: list[Any] = []
    for start in range(0, len(names), IN_CHUNK):
        woken += conn.execute(
            t.update()
            .where(t.c.awaits.in_(names[start : start + IN_CHUNK]))
            .values(waiting_for=None, awaits=None)
            .returning(t.c.connector_id, t.c.lane)
        ).all()
    return woken


def writer_queued(conn: sa.Connection, lane: str, besides: int) -> bool:
    """Whether a task of the lane ``lane`` (of any connector) other than ``besides`` is queued
    that may still write its entity, in its own lane or as a SNAPSHOT's child: one that has
    not failed and waits for nothing itself (two tasks waiting for each other's entities must
    not keep each other waiting)."""
    stmt = (
        sa.select(t.c.task_id)
        .where(
            t.c.connector_id.in_(sa.select(connector_table.c.connector_id)),  # the lane index
            t.c.lane == lane,
            t.c.task_id != besides,
            t.c.error_message.is_(None),
            t.c.awaits.is_(None),
        )
        .limit(1)
    )
    if conn.execute(stmt).first() is not None:
        return True
    # A SNAPSHOT task that writes the entity as one of its children.
    child = (
        sa.select(tl.c.task_id)
        .join(t, t.c.task_id == tl.c.task_id)
        .where(
            tl.c.lane == lane,
            tl.c.task_id != besides,
            t.c.error_message.is_(None),
            t.c.awaits.is_(None),
        )
        .limit(1)
    )
    return conn.execute(child).first() is not None


def waits_expired(since: dt.datetime | None, timeout: float, now: dt.datetime) -> bool:
    """Whether a wait that began at ``since`` has lasted ``timeout`` seconds by ``now``."""
    if since is None:
        return True
    if since.tzinfo is None:  # SQLite hands back naive UTC
        since = since.replace(tzinfo=dt.UTC)
    return (now - since).total_seconds() >= timeout


def next_attempt(conn: sa.Connection, connector_id: int, after: dt.datetime) -> dt.datetime | None:
    """The earliest time after ``after`` at which one of the connector's tasks backing off may
    be tried again (the partial index on ``next_attempt_at``), or None. Times already past
    are left out: such a task was tried, or waits behind a task that stops its queue."""
    value = conn.execute(
        sa.select(sa.func.min(t.c.next_attempt_at)).where(
            t.c.connector_id == connector_id,
            t.c.next_attempt_at.is_not(None),
            t.c.next_attempt_at > after,
        )
    ).scalar()
    return as_utc(value)


def count_deaths(
    conn: sa.Connection, connector_id: int, first: int, last: int, ids: list[int] | None = None
) -> list[tuple[int, int]]:
    """A worker died applying the connector's tasks [first, last] (or, for a lease-free run's
    batch, the tasks ``ids`` among them): count a death for each still queued. (task_id,
    deaths so far) of each, in order."""
    where = [t.c.connector_id == connector_id, t.c.task_id >= first, t.c.task_id <= last]
    chunks = (
        [None] if ids is None else [ids[i : i + IN_CHUNK] for i in range(0, len(ids), IN_CHUNK)]
    )
    out: list[Any] = []
    for chunk in chunks:
        stmt = t.update().where(*where)
        if chunk is not None:
            stmt = stmt.where(t.c.task_id.in_(chunk))
        out += conn.execute(
            stmt.values(deaths=t.c.deaths + 1).returning(t.c.task_id, t.c.deaths)
        ).all()
    return sorted((int(task_id), int(deaths)) for task_id, deaths in out)
