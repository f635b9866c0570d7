"""Reads of the queue for the Python API, the CLI, the HTTP API, the admin UI and the metrics:
the one place their statements are built and run, and the one place a task row becomes a
``TaskInfo`` and an event row an ``EventLogEntry``.

Every list is paged by key (``task_id > :cursor ORDER BY task_id LIMIT n``), never by OFFSET,
so a page deep in a queue of 100,000 tasks costs what the first page costs. The filters keep
the shapes the partial indexes are declared with (``error_message IS NOT NULL``,
``process_type = 'Error'``, ``awaits IS NOT NULL``), per connector id, so those indexes serve
them; a lane is found by the lane index (connector, lane, task id).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import sqlalchemy as sa

from syncbus.enums import ProcessType, TaskDataType, TaskType
from syncbus.model import EventLogEntry, SyncLogEntry, TaskInfo
from syncbus.store.db import IN_CHUNK, as_utc, stamp
from syncbus.store.dialect import dialect_of
from syncbus.store.enqueue import LANE_MAX
from syncbus.store.tables import (
    connector_table,
    event_log_table,
    inflight_table,
    lease_table,
    sync_log_table,
    task_table,
    type_table,
)

State = Literal["", "pending", "failed", "blocked"]
STATES: tuple[State, ...] = ("", "pending", "failed", "blocked")
# A row of any shape (read by attribute; the functions below say which columns it has).
Row: TypeAlias = "sa.Row[*tuple[Any, ...]]"
Items = list[tuple[int, str, str]]  # (task id, title, connector name), for mass actions
_BLOCKING = task_table.c.process_type == ProcessType.ERROR.value
_FAILED = task_table.c.error_message.is_not(None)
# A waiting task (CONTRACT §8): ``awaits`` and ``waiting_for`` are set and cleared together;
# ``awaits`` is the one the partial index is declared on.
_WAITING = sa.and_(task_table.c.awaits.is_not(None), task_table.c.waiting_for.is_not(None))
LANE_CONTROLS = frozenset(chr(c) for c in (*range(0x20), 0x7F))


@dataclass(frozen=True)
class TaskFilter:
    """Which queued tasks: by connector, state, object type or page type, text in the title,
    lane (its exact key) and whether they wait (Ordering.ENTITY). Plain values; ``_where``
    turns them into SQL."""

    connector: str | None = None
    state: State = ""
    type: str | None = None
    text: str | None = None
    lane: str | None = None
    waiting: bool = False


def bad_lane(lane: str) -> str | None:
    """Why ``lane`` cannot be a lane key (empty, too long, control characters: keys escape
    them), or None. A key no task has is fine: it matches nothing."""
    if not lane:
        return "a lane key is not empty (e.g. cms.user/alice)"
    if len(lane) > LANE_MAX:
        return f"a lane key has at most {LANE_MAX} characters, not {len(lane)}"
    if any(c in LANE_CONTROLS for c in lane):
        return "a lane key has no control characters (lane keys write them as %XX)"
    return None


def _where(conn: sa.Connection, flt: TaskFilter | None) -> list[sa.ColumnElement[bool]]:
    t = task_table
    if flt is None:
        return []
    out: list[sa.ColumnElement[bool]] = []
    if flt.lane is not None:
        # The lane index leads with the connector: the connectors' ids, as values, let both
        # databases seek each one's lane (not read the whole index, or the connector's queue).
        c = connector_table
        named = sa.select(c.c.connector_id)
        if flt.connector is not None:
            named = named.where(c.c.connector_name == flt.connector)
        out.append(t.c.connector_id.in_(conn.execute(named).scalars().all()))
    elif flt.connector is not None:  # "" is a name no connector has
        cid = dialect_of(conn).unindexed(t.c.connector_id) if flt.waiting else t.c.connector_id
        out.append(cid == _connector_id(flt.connector))
    if flt.state == "pending":
        out.append(t.c.error_message.is_(None))
    elif flt.state == "failed":
        out.append(_FAILED)
    elif flt.state == "blocked":
        out.append(_BLOCKING)
    if flt.type:
        out.append(sa.or_(t.c.object_type == flt.type, t.c.class_name == flt.type))
    if flt.text:
        out.append(t.c.title.icontains(flt.text, autoescape=True))
    if flt.lane is not None:
        out.append(t.c.lane == flt.lane)
    if flt.waiting:
        out.append(_WAITING)
    return out


def _scan_key(conn: sa.Connection, flt: TaskFilter | None) -> sa.ColumnElement[Any]:
    """What a list is paged and ordered by: the task id. Filtered to a lane or to waiting
    tasks, the few tasks are read by the lane index or the partial index of waiting tasks
    and sorted, instead of walking the queue in id order (see ``Dialect.unindexed``)."""
    tid = task_table.c.task_id
    if flt is not None and (flt.waiting or flt.lane is not None):
        return dialect_of(conn).unindexed(tid)
    return tid


def _connector_id(name: str) -> sa.ScalarSelect[Any]:
    c = connector_table
    return sa.select(c.c.connector_id).where(c.c.connector_name == name).scalar_subquery()


# -- tasks ------------------------------------------------------------------------------------
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


# Every column of a task but its payload (``data``: read alone, by ``task_data``) and what
# only its record reads (``external``, ``traceparent``: store.history).
_TASKS = task_joined(
    *(
        col
        for col in task_table.c
        if col.name not in ("data", "connector_id", "external", "traceparent")
    )
)


def task_info(row: Any) -> TaskInfo:
    """The one mapping of a task row (of ``_TASKS``) to what the bus reports."""
    return TaskInfo(
        task_id=int(row.task_id),
        connector_name=row.connector_name,
        task_type=TaskType.parse(row.task_type),
        data_type=TaskDataType.parse(row.data_type),
        process_type=ProcessType.parse(row.process_type),
        object_type=row.object_type,
        class_name=row.class_name,
        title=row.title,
        site_name=row.site_name,
        created_at=stamp(row.created_at),
        error_message=row.error_message,
        last_run_at=as_utc(row.last_run_at),
        is_running=bool(row.is_running),
        idempotency_key=row.idempotency_key,
        lane=row.lane,
        waiting_for=row.waiting_for,
        waiting_since=as_utc(row.waiting_since) if row.waiting_for is not None else None,
        attempts=int(row.attempts or 0),
        next_attempt_at=as_utc(row.next_attempt_at),
        deaths=int(row.deaths or 0),
    )


def tasks(
    conn: sa.Connection,
    flt: TaskFilter | None = None,
    *,
    cursor: int | None = None,
    descending: bool = False,
    limit: int | None = None,
) -> list[TaskInfo]:
    """Matching tasks past ``cursor`` in the scan order (ids greater than it, ascending; or
    smaller, descending), ``limit`` of them at most."""
    tid = _scan_key(conn, flt)
    stmt = _TASKS.where(*_where(conn, flt))
    if cursor is not None:
        stmt = stmt.where(tid < cursor if descending else tid > cursor)
    stmt = stmt.order_by(tid.desc() if descending else tid)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [task_info(r) for r in conn.execute(stmt)]


def task(conn: sa.Connection, task_id: int) -> TaskInfo | None:
    row = conn.execute(_TASKS.where(task_table.c.task_id == task_id)).first()
    return None if row is None else task_info(row)


def task_data(conn: sa.Connection, task_id: int) -> str | None:
    """The stored payload (JSON) of a task."""
    t = task_table
    value = conn.execute(sa.select(t.c.data).where(t.c.task_id == task_id)).scalar()
    return None if value is None else str(value)


def count_tasks(conn: sa.Connection, flt: TaskFilter | None = None) -> int:
    stmt = sa.select(sa.func.count()).select_from(task_table).where(*_where(conn, flt))
    return int(conn.execute(stmt).scalar_one())


def _items(
    conn: sa.Connection,
    *where: sa.ColumnElement[bool],
    limit: int | None = None,
    key: sa.ColumnElement[Any] = task_table.c.task_id,
) -> Items:
    t, c = task_table, connector_table
    stmt = (
        sa.select(t.c.task_id, t.c.title, c.c.connector_name)
        .join(c, c.c.connector_id == t.c.connector_id)
        .where(*where)
        .order_by(key)
        .limit(limit)
    )
    return [(int(r[0]), r[1], r[2]) for r in conn.execute(stmt)]


def matching_items(conn: sa.Connection, flt: TaskFilter, after: int, limit: int) -> Items:
    """The next ``limit`` matching tasks with an id greater than ``after`` (ascending)."""
    key = _scan_key(conn, flt)
    return _items(conn, *_where(conn, flt), key > after, limit=limit, key=key)


def items_by_id(conn: sa.Connection, ids: Sequence[int]) -> Items:
    """The queued tasks among ``ids`` (ascending); ids no longer queued are left out."""
    out: Items = []
    for start in range(0, len(ids), IN_CHUNK):
        out += _items(conn, task_table.c.task_id.in_(ids[start : start + IN_CHUNK]))
    return sorted(out)


def position(conn: sa.Connection, connector_name: str, task_id: int) -> int:
    """The task's place in its connector's queue (1 = the head)."""
    t = task_table
    stmt = (
        sa.select(sa.func.count())
        .select_from(t)
        .where(t.c.connector_id == _connector_id(connector_name), t.c.task_id <= task_id)
    )
    return int(conn.execute(stmt).scalar_one())


def lane_position(
    conn: sa.Connection, connector_name: str, lane: str, task_id: int
) -> tuple[int, int]:
    """The task's place in its lane (1 = the head) and the lane's size, each counted up to
    ``COUNT_CAP + 1`` (by the lane index)."""
    t = task_table
    lane_tasks = sa.select(t.c.task_id).where(
        t.c.connector_id == _connector_id(connector_name), t.c.lane == lane
    )
    ahead = _capped_count(lane_tasks.where(t.c.task_id <= task_id), conn)
    return ahead, _capped_count(lane_tasks, conn)


def task_log(conn: sa.Connection, task_id: int) -> list[SyncLogEntry]:
    """The task's failed attempts, oldest first."""
    t = sync_log_table
    stmt = sa.select(t.c.time, t.c.error_message).where(t.c.task_id == task_id)
    rows = conn.execute(stmt.order_by(t.c.log_id)).all()
    return [SyncLogEntry(stamp(r.time), r.error_message) for r in rows]


# -- per connector --------------------------------------------------------------------------
def _queue_counts() -> sa.Subquery:
    t = task_table
    return (
        sa.select(
            t.c.connector_id,
            sa.func.count().label("queued"),
            sa.func.sum(sa.case((_FAILED, 1), else_=0)).label("failed"),
            sa.func.sum(sa.case((_BLOCKING, 1), else_=0)).label("blocked"),
            sa.func.min(t.c.created_at).label("oldest"),
        )
        .group_by(t.c.connector_id)
        .subquery("queue_counts")
    )


# Per connector with queued tasks: ``queued``, ``failed`` (with an error), ``blocked`` (ERROR)
# and ``oldest`` (the first one's created_at). The one count of the queues: the admin's
# statistics, /metrics and the connectors list join it.
QUEUE_COUNTS = _queue_counts()


def connector_queues(conn: sa.Connection) -> list[Row]:
    """Every connector (by name) with its lease row, ``QUEUE_COUNTS``' columns (None for
    an empty queue) and ``running``: a run holds its lease, or (a lease-free ENTITY run) has
    a batch in flight; a lease or record whose time ran out is a dead runner's, not a run."""
    c, lease, counts, flight = connector_table, lease_table, QUEUE_COUNTS, inflight_table
    now = dialect_of(conn).now_epoch()
    in_flight = sa.exists().where(
        flight.c.connector_id == c.c.connector_id, flight.c.expires_at > now
    )
    running = sa.or_(sa.and_(lease.c.owner.is_not(None), lease.c.expires_at > now), in_flight)
    stmt = (
        sa.select(
            c,
            lease,
            counts.c.queued,
            counts.c.failed,
            counts.c.blocked,
            counts.c.oldest,
            running.label("running"),
        )
        .outerjoin(counts, counts.c.connector_id == c.c.connector_id)
        .outerjoin(lease, lease.c.connector_id == c.c.connector_id)
        .order_by(c.c.connector_name)
    )
    return list(conn.execute(stmt).all())


def connectors(conn: sa.Connection, name: str | None = None) -> list[tuple[int, str, bool, str]]:
    """``connector_id``, ``connector_name``, ``enabled``, ``ordering`` (its wire value) of
    every connector (or the one named), by name."""
    c = connector_table
    stmt = sa.select(c.c.connector_id, c.c.connector_name, c.c.enabled, c.c.ordering)
    if name:
        stmt = stmt.where(c.c.connector_name == name)
    rows = conn.execute(stmt.order_by(c.c.connector_name))
    return [(int(cid), str(n), bool(enabled), str(o)) for cid, n, enabled, o in rows]


def connector_names(conn: sa.Connection) -> list[str]:
    c = connector_table
    return [
        str(n)
        for n in conn.execute(sa.select(c.c.connector_name).order_by(c.c.connector_name)).scalars()
    ]


def has_tasks(conn: sa.Connection, connector_id: int) -> bool:
    t = task_table
    head = sa.select(t.c.task_id).where(t.c.connector_id == connector_id).limit(1)
    return conn.execute(head).first() is not None


def first_blocking(conn: sa.Connection, connector_id: int) -> TaskInfo | None:
    """The connector's first ERROR task (a run stops there)."""
    t = task_table
    stmt = _TASKS.where(t.c.connector_id == connector_id, _BLOCKING).order_by(t.c.task_id)
    row = conn.execute(stmt.limit(1)).first()
    return None if row is None else task_info(row)


def tasks_behind(conn: sa.Connection, connector_id: int, task_id: int) -> int:
    t = task_table
    stmt = (
        sa.select(sa.func.count())
        .select_from(t)
        .where(t.c.connector_id == connector_id, t.c.task_id > task_id)
    )
    return int(conn.execute(stmt).scalar_one())


# -- lanes of an ENTITY connector (why it does not move) --------------------------------------
# Counts for a page view stop here: a queue with more halted lanes or waiting tasks than this
# says "at least" instead of reading them all every few seconds.
COUNT_CAP = 10_000


def _capped_count(stmt: sa.Select[Any], conn: sa.Connection, cap: int = COUNT_CAP) -> int:
    """How many rows ``stmt`` gives, counting up to ``cap + 1`` at most."""
    inner = stmt.limit(cap + 1).subquery()
    return int(conn.execute(sa.select(sa.func.count()).select_from(inner)).scalar_one())


def halted_lane_count(conn: sa.Connection, connector_id: int) -> int:
    """Lanes holding an ERROR task (by the partial index on ERROR tasks); ``COUNT_CAP + 1``
    means more than ``COUNT_CAP``."""
    t = task_table
    stmt = sa.select(t.c.lane).where(t.c.connector_id == connector_id, _BLOCKING).distinct()
    return _capped_count(stmt, conn)


def halted_lanes(conn: sa.Connection, connector_id: int, limit: int) -> list[tuple[TaskInfo, int]]:
    """The first ``limit`` halted lanes, by their first ERROR task (the one that halts the
    lane), each with how many tasks queue behind it in its lane (up to ``COUNT_CAP + 1``)."""
    t = task_table
    firsts: dict[str | None, TaskInfo] = {}
    cursor = 0
    for _ in range(8):  # lanes with many ERROR tasks each: look a little further, not forever
        stmt = _TASKS.where(t.c.connector_id == connector_id, _BLOCKING, t.c.task_id > cursor)
        chunk = [task_info(r) for r in conn.execute(stmt.order_by(t.c.task_id).limit(limit * 4))]
        for info in chunk:
            firsts.setdefault(info.lane, info)
        if len(firsts) >= limit or len(chunk) < limit * 4:
            break
        cursor = chunk[-1].task_id
    out = []
    for info in sorted(firsts.values(), key=lambda i: i.task_id)[:limit]:
        same_lane = t.c.lane.is_(None) if info.lane is None else t.c.lane == info.lane
        behind = sa.select(t.c.task_id).where(
            t.c.connector_id == connector_id, same_lane, t.c.task_id > info.task_id
        )
        out.append((info, _capped_count(behind, conn)))
    return out


def first_errors(
    conn: sa.Connection, lanes: Collection[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """The first ERROR task id of each of these lanes (connector name, lane key) that holds
    one: the task that halts it. By the lane index, per connector id."""
    c, t = connector_table, task_table
    names = {name for name, _lane in lanes}
    if not names:
        return {}
    by_id = {
        int(cid): str(name)
        for cid, name in conn.execute(
            sa.select(c.c.connector_id, c.c.connector_name).where(c.c.connector_name.in_(names))
        )
    }
    keys = sorted({lane for _name, lane in lanes})
    out: dict[tuple[str, str], int] = {}
    for start in range(0, len(keys), IN_CHUNK):
        stmt = (
            sa.select(t.c.connector_id, t.c.lane, sa.func.min(t.c.task_id))
            .where(
                t.c.connector_id.in_(list(by_id)),
                t.c.lane.in_(keys[start : start + IN_CHUNK]),
                _BLOCKING,
            )
            .group_by(t.c.connector_id, t.c.lane)
        )
        for cid, lane, first in conn.execute(stmt):
            out[(by_id[int(cid)], str(lane))] = int(first)
    return out


def waiting_count(conn: sa.Connection, connector_id: int) -> int:
    """The connector's waiting tasks (by the partial index on ``awaits``), up to
    ``COUNT_CAP + 1``."""
    t = task_table
    cid = dialect_of(conn).unindexed(t.c.connector_id)  # by ``awaits``, not the queue
    stmt = sa.select(t.c.task_id).where(cid == connector_id, _WAITING)
    return _capped_count(stmt, conn)


def waited_for(conn: sa.Connection, connector_id: int, limit: int) -> list[Row]:
    """The first ``limit`` entities (by lane key) the connector's tasks wait for: ``awaits``,
    ``waiting_for``, ``tasks`` (how many wait for it), ``first_task_id``, ``since``."""
    t = task_table
    stmt = (
        sa.select(
            t.c.awaits,
            sa.func.min(t.c.waiting_for).label("waiting_for"),
            sa.func.count().label("tasks"),
            sa.func.min(t.c.task_id).label("first_task_id"),
            sa.func.min(t.c.waiting_since).label("since"),
        )
        .where(dialect_of(conn).unindexed(t.c.connector_id) == connector_id, _WAITING)
        .group_by(t.c.awaits)
        .order_by(t.c.awaits)
        .limit(limit)
    )
    return list(conn.execute(stmt).all())


# -- the fix hint's reads (see syncbus.fixhint) ------------------------------------------------
def failed_task(conn: sa.Connection, task_id: int) -> Row | None:
    """``connector_id``, ``site_name``, ``error_message`` and ``data`` of a queued task."""
    t = task_table
    stmt = sa.select(t.c.connector_id, t.c.site_name, t.c.error_message, t.c.data)
    return conn.execute(stmt.where(t.c.task_id == task_id)).first()


def upsert_candidates(
    conn: sa.Connection,
    connector_id: int,
    task_id: int,
    *,
    object_type: str | None,
    needle: str,
    upserts: Sequence[str],
    limit: int,
) -> list[Row]:
    """``task_id``, ``site_name``, ``data`` of the connector's queued upserts (but ``task_id``)
    that may create an object of ``object_type`` (a SNAPSHOT's children may), or a page when
    ``object_type`` is None, and whose payload holds the JSON text ``needle``: the cheap
    columns first, then the text, before anything is decoded. Ascending, ``limit`` at most."""
    t = task_table
    kind: sa.ColumnElement[bool]
    if object_type is None:
        kind = t.c.class_name.is_not(None)
        text = t.c.data.icontains(needle, autoescape=True)  # a GUID in either case
    else:
        snapshot = t.c.data_type == TaskDataType.SNAPSHOT.value
        kind = sa.or_(t.c.object_type == object_type, snapshot)
        text = t.c.data.contains(needle, autoescape=True)
    stmt = (
        sa.select(t.c.task_id, t.c.site_name, t.c.data)
        .where(
            t.c.connector_id == connector_id,
            t.c.task_id != task_id,
            t.c.task_type.in_(upserts),
            kind,
            text,
        )
        .order_by(t.c.task_id)
        .limit(limit)
    )
    return list(conn.execute(stmt).all())


# -- the event log ------------------------------------------------------------------------
def _event(row: Any) -> EventLogEntry:
    return EventLogEntry(
        time=stamp(row.time),
        source=row.source,
        code=row.code,
        message=row.message,
        event_type=row.event_type,
        event_id=int(row.event_id),
    )


def events(
    conn: sa.Connection,
    *,
    cursor: int | None = None,
    descending: bool = False,
    limit: int | None = None,
) -> list[EventLogEntry]:
    """Events past ``cursor`` in the scan order (as ``tasks``), ``limit`` of them at most."""
    eid = event_log_table.c.event_id
    stmt = sa.select(event_log_table)
    if cursor is not None:
        stmt = stmt.where(eid < cursor if descending else eid > cursor)
    stmt = stmt.order_by(eid.desc() if descending else eid).limit(limit)
    return [_event(r) for r in conn.execute(stmt)]


# -- declared types -----------------------------------------------------------------------
def type_declaration(conn: sa.Connection, kind: str, name: str) -> str | None:
    """The stored declaration (JSON) of a user-defined object type or page type."""
    t = type_table
    stmt = sa.select(t.c.declaration).where(t.c.kind == kind, t.c.name == name)
    value = conn.execute(stmt).scalar()
    return None if value is None else str(value)


def declared_type_names(conn: sa.Connection, kind: str | None = None) -> set[str]:
    """The names of the stored type declarations (of one kind, ``object`` or ``page``)."""
    stmt = sa.select(type_table.c.name)
    if kind is not None:
        stmt = stmt.where(type_table.c.kind == kind)
    return {str(n) for n in conn.execute(stmt).scalars()}
