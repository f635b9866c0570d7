"""Read queries for operators (the admin UI): the queue by filter and key, connector statistics,
the blockers, one task in detail, the event log. SQLAlchemy Core on the bus's reader engine.

Every list is paged by key (``task_id > :cursor ORDER BY task_id LIMIT n``), never by OFFSET,
so a page deep in a queue of 100,000 tasks costs what the first page costs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from syncbus.bus import IntegrationBus
from syncbus.enums import ProcessType
from syncbus.fixhint import fix_hint
from syncbus.model import EventLogEntry, SyncLogEntry, TaskInfo
from syncbus.store.db import as_utc, utcnow
from syncbus.store.reads import task_joined
from syncbus.store.switches import flag
from syncbus.store.tables import (
    connector_table,
    event_log_table,
    lease_table,
    setting_table,
    task_table,
    type_table,
)

State = Literal["", "pending", "failed", "blocked"]
Sort = Literal["asc", "desc"]
STATES: tuple[State, ...] = ("", "pending", "failed", "blocked")
SETTING_KEYS = ("integration_enabled", "log_external", "process_external")


@dataclass(frozen=True)
class TaskFilter:
    """Which queued tasks: by connector, state, object type or page type, text in the title."""

    connector: str | None = None
    state: State = ""
    type: str | None = None
    text: str | None = None

    def clauses(self) -> list[sa.ColumnElement[bool]]:
        t, c = task_table, connector_table
        out: list[sa.ColumnElement[bool]] = []
        if self.connector:
            cid = sa.select(c.c.connector_id).where(c.c.connector_name == self.connector)
            out.append(t.c.connector_id == cid.scalar_subquery())
        if self.state == "pending":
            out.append(t.c.error_message.is_(None))
        elif self.state == "failed":
            out.append(t.c.error_message.is_not(None))
        elif self.state == "blocked":
            out.append(t.c.process_type == ProcessType.ERROR.value)
        if self.type:
            out.append(sa.or_(t.c.object_type == self.type, t.c.class_name == self.type))
        if self.text:
            out.append(t.c.title.icontains(self.text, autoescape=True))
        return out


@dataclass(frozen=True)
class TaskRow:
    """One line of the task list (without the payload)."""

    task_id: int
    connector_name: str
    task_type: str
    process_type: str
    object_type: str | None
    class_name: str | None
    title: str
    site_name: str | None
    created_at: dt.datetime
    error_message: str | None
    last_run_at: dt.datetime | None
    is_running: bool

    @property
    def kind(self) -> str:
        return self.object_type or self.class_name or ""


@dataclass(frozen=True)
class TaskPage:
    rows: list[TaskRow]
    next_after: int | None  # pass as ``after`` for the next page (in display order)
    prev_before: int | None  # pass as ``before`` for the previous page


@dataclass(frozen=True)
class ConnectorStats:
    name: str
    display_name: str
    enabled: bool
    queued: int
    failed: int
    blocked: int
    oldest_created_at: dt.datetime | None
    running: bool
    last_run_started_at: dt.datetime | None
    last_run_finished_at: dt.datetime | None
    last_run_applied: int | None
    last_run_failed: int | None
    last_run_error: str | None


@dataclass(frozen=True)
class Blocker:
    """Why a connector's queue does not move: an ERROR task, or a switch that is off."""

    connector_name: str
    reason: str
    task: TaskRow | None = None
    waiting_behind: int = 0
    hint: str | None = None  # the fix is queued behind the task: synchronize it first


@dataclass(frozen=True)
class TaskDetail:
    info: TaskInfo
    content_json: str
    records: list[dict[str, Any]]  # translation records as stored (see syncbus.payload)
    log: list[SyncLogEntry]
    position: int  # 1 = head of its connector's queue
    raw_error: str | None = None


@dataclass(frozen=True)
class EventPage:
    events: list[EventLogEntry]
    next_before: int | None  # older
    prev_after: int | None  # newer


Items = list[tuple[int, str, str]]  # (task id, title, connector name), for mass actions
_ROW_FIELDS = [
    "task_id",
    "task_type",
    "process_type",
    "object_type",
    "class_name",
    "title",
    "site_name",
    "created_at",
    "error_message",
    "last_run_at",
]


def _rows_query() -> sa.Select[Any]:
    return task_joined(*(task_table.c[name] for name in _ROW_FIELDS))


def _task_row(r: Any) -> TaskRow:
    values = dict(r._mapping)
    values.update(
        task_id=int(r.task_id),
        created_at=as_utc(r.created_at) or utcnow(),
        last_run_at=as_utc(r.last_run_at),
        is_running=bool(r.is_running),
    )
    return TaskRow(**values)


def task_page(
    bus: IntegrationBus,
    flt: TaskFilter,
    *,
    sort: Sort = "asc",
    after: int | None = None,
    before: int | None = None,
    limit: int = 50,
) -> TaskPage:
    """One page of the queue in ``sort`` order of task id, by key: the page after ``after``,
    or the page before ``before`` (both in display order), or the first page."""
    t = task_table
    ascending = sort == "asc"
    backwards = before is not None and after is None
    cursor = before if backwards else after
    scan_ascending = ascending != backwards
    stmt = _rows_query().where(*flt.clauses())
    if cursor is not None:
        stmt = stmt.where(t.c.task_id > cursor if scan_ascending else t.c.task_id < cursor)
    stmt = stmt.order_by(t.c.task_id if scan_ascending else t.c.task_id.desc()).limit(limit + 1)
    with bus.reader.connect() as conn:
        rows = [_task_row(r) for r in conn.execute(stmt)]
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    if not rows:
        return TaskPage([], None, None)
    has_next = more if not backwards else True
    has_prev = more if backwards else cursor is not None
    return TaskPage(
        rows,
        next_after=rows[-1].task_id if has_next else None,
        prev_before=rows[0].task_id if has_prev else None,
    )


def task_row(bus: IntegrationBus, task_id: int) -> TaskRow | None:
    with bus.reader.connect() as conn:
        row = conn.execute(_rows_query().where(task_table.c.task_id == task_id)).first()
    return None if row is None else _task_row(row)


def count_tasks(bus: IntegrationBus, flt: TaskFilter) -> int:
    stmt = sa.select(sa.func.count()).select_from(task_table).where(*flt.clauses())
    with bus.reader.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def matching_tasks(bus: IntegrationBus, flt: TaskFilter, after: int, limit: int) -> Items:
    """The next ``limit`` matching tasks with an id greater than ``after`` (ascending)."""
    t, c = task_table, connector_table
    stmt = (
        sa.select(t.c.task_id, t.c.title, c.c.connector_name)
        .join(c, c.c.connector_id == t.c.connector_id)
        .where(*flt.clauses(), t.c.task_id > after)
        .order_by(t.c.task_id)
        .limit(limit)
    )
    with bus.reader.connect() as conn:
        return [(int(r[0]), r[1], r[2]) for r in conn.execute(stmt)]


def tasks_by_id(bus: IntegrationBus, ids: list[int]) -> Items:
    """The queued tasks among ``ids`` (ascending); ids no longer queued are left out."""
    t, c = task_table, connector_table
    out: Items = []
    with bus.reader.connect() as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            stmt = (
                sa.select(t.c.task_id, t.c.title, c.c.connector_name)
                .join(c, c.c.connector_id == t.c.connector_id)
                .where(t.c.task_id.in_(chunk))
            )
            out += [(int(r[0]), r[1], r[2]) for r in conn.execute(stmt)]
    return sorted(out)


def read_settings(bus: IntegrationBus) -> dict[str, bool]:
    """The three switches in one query (a missing row means on)."""
    s = setting_table
    with bus.reader.connect() as conn:
        stmt = sa.select(s.c.key, s.c.value).where(s.c.key.in_(SETTING_KEYS))
        rows = {str(k): str(v) for k, v in conn.execute(stmt)}
    return {key: flag(rows.get(key)) for key in SETTING_KEYS}


def connector_stats(bus: IntegrationBus) -> list[ConnectorStats]:
    """Per connector: queue counts, the oldest queued task's time, and the last run (lease)."""
    t, c, lease = task_table, connector_table, lease_table
    blocking = t.c.process_type == ProcessType.ERROR.value
    counts = (
        sa.select(
            t.c.connector_id,
            sa.func.count().label("queued"),
            sa.func.sum(sa.case((t.c.error_message.is_not(None), 1), else_=0)).label("failed"),
            sa.func.sum(sa.case((blocking, 1), else_=0)).label("blocked"),
            sa.func.min(t.c.created_at).label("oldest"),
        )
        .group_by(t.c.connector_id)
        .subquery()
    )
    stmt = (
        sa.select(c, lease, counts.c.queued, counts.c.failed, counts.c.blocked, counts.c.oldest)
        .outerjoin(counts, counts.c.connector_id == c.c.connector_id)
        .outerjoin(lease, lease.c.connector_id == c.c.connector_id)
        .order_by(c.c.connector_name)
    )
    with bus.reader.connect() as conn:
        rows = conn.execute(stmt).all()
    return [
        ConnectorStats(
            name=r.connector_name,
            display_name=r.display_name,
            enabled=bool(r.enabled),
            queued=int(r.queued or 0),
            failed=int(r.failed or 0),
            blocked=int(r.blocked or 0),
            running=r.owner is not None,
            last_run_applied=r.last_run_applied,
            last_run_failed=r.last_run_failed,
            last_run_error=r.last_run_error,
            oldest_created_at=as_utc(r.oldest),
            last_run_started_at=as_utc(r.last_run_started_at),
            last_run_finished_at=as_utc(r.last_run_finished_at),
        )
        for r in rows
    ]


def blockers(bus: IntegrationBus, connector: str | None = None) -> list[Blocker]:
    """Why queues do not move: switches that are off, disabled connectors with tasks, and per
    connector the first ERROR task (a run stops there), with how many tasks wait behind it."""
    t, c = task_table, connector_table
    settings = read_settings(bus)
    out: list[Blocker] = []
    if not settings["integration_enabled"]:
        out.append(Blocker("", "The integration bus is switched off: no task is processed."))
    elif not settings["process_external"]:
        out.append(Blocker("", "Processing of incoming tasks is switched off: tasks wait."))
    stmt = sa.select(c.c.connector_id, c.c.connector_name, c.c.enabled).order_by(c.c.connector_name)
    if connector:
        stmt = stmt.where(c.c.connector_name == connector)
    with bus.reader.connect() as conn:
        for cid, name, enabled in conn.execute(stmt).all():
            head = sa.select(t.c.task_id).where(t.c.connector_id == cid).limit(1)
            if not enabled and conn.execute(head).first() is not None:
                out.append(Blocker(name, "The connector is disabled: its tasks wait."))
            first_error = conn.execute(
                _rows_query()
                .where(t.c.connector_id == cid, t.c.process_type == ProcessType.ERROR.value)
                .order_by(t.c.task_id)
                .limit(1)
            ).first()
            if first_error is None:
                continue
            row = _task_row(first_error)
            behind = conn.execute(
                sa.select(sa.func.count())
                .select_from(t)
                .where(t.c.connector_id == cid, t.c.task_id > row.task_id)
            ).scalar_one()
            reason = row.error_message or "the task failed"
            hint = fix_hint(bus.reader, bus.registry, row.task_id)
            out.append(Blocker(name, reason, row, int(behind), hint))
    return out


def with_hint(bus: IntegrationBus, task: TaskInfo) -> TaskInfo:
    """The task with its fix hint (see syncbus.fixhint) filled in."""
    if task.error_message is None:
        return task
    return dataclasses.replace(task, hint=fix_hint(bus.reader, bus.registry, task.task_id))


def task_detail(bus: IntegrationBus, task_id: int) -> TaskDetail | None:
    """A task with its stored content (pretty JSON), translation records and error history."""
    info = bus.get_task(task_id)
    if info is None:
        return None
    info = with_hint(bus, info)
    raw = bus.get_task_data(task_id) or ""
    t = task_table
    with bus.reader.connect() as conn:
        position = conn.execute(
            sa.select(sa.func.count())
            .select_from(t)
            .join(connector_table, connector_table.c.connector_id == t.c.connector_id)
            .where(connector_table.c.connector_name == info.connector_name, t.c.task_id <= task_id)
        ).scalar_one()
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        return TaskDetail(info, raw, [], bus.task_log(task_id), int(position), str(exc))
    content = {k: v for k, v in body.items() if k not in ("tr", "v")}
    pretty = json.dumps(content, indent=2, ensure_ascii=False, sort_keys=False)
    records = [r for r in body.get("tr") or [] if isinstance(r, dict)]
    return TaskDetail(info, pretty, records, bus.task_log(task_id), int(position))


def event_page(
    bus: IntegrationBus, *, before: int | None = None, after: int | None = None, limit: int = 50
) -> EventPage:
    """Events newest first, by key: older than ``before``, or newer than ``after``."""
    e = event_log_table
    stmt = sa.select(e)
    newer = after is not None and before is None
    if newer:
        stmt = stmt.where(e.c.event_id > after).order_by(e.c.event_id)
    else:
        if before is not None:
            stmt = stmt.where(e.c.event_id < before)
        stmt = stmt.order_by(e.c.event_id.desc())
    with bus.reader.connect() as conn:
        rows = list(conn.execute(stmt.limit(limit + 1)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    if newer:
        rows.reverse()
    events = [
        EventLogEntry(
            time=as_utc(r.time) or utcnow(),
            source=r.source,
            code=r.code,
            message=r.message,
            event_type=r.event_type,
            event_id=int(r.event_id),
        )
        for r in rows
    ]
    if not events:
        return EventPage([], None, None)
    has_older = more if not newer else True
    has_newer = more if newer else before is not None
    return EventPage(
        events,
        next_before=events[-1].event_id if has_older else None,
        prev_after=events[0].event_id if has_newer else None,
    )


def connector_names(bus: IntegrationBus) -> list[str]:
    c = connector_table
    with bus.reader.connect() as conn:
        return [
            str(n)
            for n in conn.execute(
                sa.select(c.c.connector_name).order_by(c.c.connector_name)
            ).scalars()
        ]


def type_names(bus: IntegrationBus) -> list[str]:
    """Object types and page types a task may carry: registered here, or declared in the
    database by another process."""
    names = set(bus.registry.object_types) | set(bus.registry.page_types)
    with bus.reader.connect() as conn:
        names |= {str(n) for n in conn.execute(sa.select(type_table.c.name)).scalars()}
    return sorted(names)
