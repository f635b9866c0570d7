"""What operators read (the admin UI, the CLI): the queue by filter and key, connector
statistics, the blockers, one task in detail, the event log. The statements live in
``syncbus.store.reads``; this module shapes their answers into pages and adds the fix hint.

Every list is paged by key (ids past a cursor, in order, ``limit + 1`` rows to know whether
there is more), never by OFFSET, so a page deep in a queue of 100,000 tasks costs what the
first page costs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from syncbus.bus import IntegrationBus
from syncbus.content.builtin import ROOT_CLASS
from syncbus.content.paths import canonical_culture, culture_problem
from syncbus.content.validation import show
from syncbus.enums import Ordering
from syncbus.errors import ConnectorNotFoundError, InvalidObjectError, ObjectNotFoundError
from syncbus.fixhint import fix_hint
from syncbus.model import EventLogEntry, SyncLogEntry, TaskInfo
from syncbus.store import reads
from syncbus.store.connectors import not_registered
from syncbus.store.db import as_utc
from syncbus.store.reads import COUNT_CAP, STATES, Items, State, TaskFilter, bad_lane
from syncbus.store.switches import LOGGING, MASTER, PROCESSING, first_off, flag
from syncbus.store.switches import read_settings as _read_settings

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = [
    "STATES",
    "Blocker",
    "ConnectorStats",
    "EventPage",
    "HaltedLane",
    "Items",
    "LaneReport",
    "State",
    "TaskDetail",
    "TaskFilter",
    "TaskPage",
    "TaskRow",
    "WaitedFor",
    "bad_lane",
    "blockers",
    "connector_names",
    "connector_stats",
    "count_tasks",
    "event_page",
    "lane_report",
    "lane_report_of",
    "matching_tasks",
    "read_settings",
    "task_detail",
    "task_page",
    "task_row",
    "tasks_by_id",
    "type_names",
    "with_hint",
]

Sort = Literal["asc", "desc"]
LANES_SHOWN = 3  # halted lanes and waited-for entities named by the dashboard, each
SETTING_KEYS = (MASTER, LOGGING, PROCESSING)
_SWITCH_BLOCKS = {
    MASTER: "The integration bus is switched off: no task is processed.",
    PROCESSING: "Processing of incoming tasks is switched off: tasks wait.",
}
# One line of the task list: the task as the bus reports it (one mapping, in the store).
TaskRow = TaskInfo


@dataclass(frozen=True)
class TaskPage:
    rows: list[TaskInfo]
    next_after: int | None  # pass as ``after`` for the next page (in display order)
    prev_before: int | None  # pass as ``before`` for the previous page
    # Rows queued behind an ERROR task of their lane (Ordering.ENTITY): task id -> that task.
    halted_by: dict[int, int] = dataclasses.field(default_factory=dict)


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
    ordering: Ordering = Ordering.CONNECTOR
    queue_limit: int | None = None  # backpressure (CONTRACT §9): logging refused at this fill

    @property
    def fill(self) -> int | None:
        """How full the queue is, in percent of its limit (None without a limit)."""
        if not self.queue_limit:
            return None
        return min(100, round(100 * self.queued / self.queue_limit))


@dataclass(frozen=True)
class HaltedLane:
    """A lane of an ENTITY connector that an ERROR task halts (its other lanes go on)."""

    lane: str | None  # None: tasks logged before the connector became ENTITY
    task: TaskInfo  # the lane's first ERROR task
    behind: int  # tasks queued behind it in the lane


@dataclass(frozen=True)
class WaitedFor:
    """An entity that tasks of an ENTITY connector wait for (a missing reference)."""

    entity: str  # as TaskInfo.waiting_for says it: cms.user 'alice'
    lane: str  # the entity's lane key
    tasks: int  # how many wait for it
    first_task_id: int
    since: dt.datetime | None  # the earliest of their waits


@dataclass(frozen=True)
class LaneReport:
    """Why tasks of an ENTITY connector do not move: halted lanes and waiting tasks. Counts
    above ``COUNT_CAP`` read ``COUNT_CAP + 1`` (see ``capped``)."""

    halted: int
    halted_lanes: list[HaltedLane]
    waiting: int
    waited_for: list[WaitedFor]

    @staticmethod
    def capped(count: int) -> str:
        """A count as shown: ``more than 10000`` once it reached the cap."""
        return f"more than {COUNT_CAP}" if count > COUNT_CAP else str(count)


@dataclass(frozen=True)
class Blocker:
    """Why a connector's queue does not move: an ERROR task, or a switch that is off; for an
    ENTITY connector, its halted lanes and waiting tasks (``lanes``) instead of one task."""

    connector_name: str
    reason: str
    task: TaskInfo | None = None
    waiting_behind: int = 0
    hint: str | None = None  # the fix is queued behind the task: synchronize it first
    lanes: LaneReport | None = None


@dataclass(frozen=True)
class TaskDetail:
    info: TaskInfo
    content_json: str
    records: list[dict[str, Any]]  # translation records as stored (see syncbus.payload)
    log: list[SyncLogEntry]
    position: int  # 1 = head of its connector's queue
    raw_error: str | None = None
    lane_position: int = 0  # 1 = head of its lane (Ordering.ENTITY); 0 without a lane
    lane_size: int = 0  # tasks queued in its lane
    halted_by: int | None = None  # the ERROR task ahead of it in its lane, if any


@dataclass(frozen=True)
class EventPage:
    events: list[EventLogEntry]
    next_before: int | None  # older
    prev_after: int | None  # newer


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
    backwards = before is not None and after is None
    cursor = before if backwards else after
    descending = (sort == "asc") == backwards
    with bus.reader.connect() as conn:
        rows = reads.tasks(conn, flt, cursor=cursor, descending=descending, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        halted_by = _halted_by(conn, rows)
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
        halted_by=halted_by,
    )


def _halted_by(conn: Connection, rows: list[TaskInfo]) -> dict[int, int]:
    """Which of these tasks wait behind an ERROR task of their lane, and behind which."""
    lanes = {(r.connector_name, r.lane) for r in rows if r.lane is not None}
    errors = reads.first_errors(conn, lanes)
    out = {}
    for r in rows:
        first = errors.get((r.connector_name, r.lane or ""))
        if first is not None and first < r.task_id:
            out[r.task_id] = first
    return out


def task_row(bus: IntegrationBus, task_id: int) -> TaskInfo | None:
    return bus.get_task(task_id)


def count_tasks(bus: IntegrationBus, flt: TaskFilter) -> int:
    with bus.reader.connect() as conn:
        return reads.count_tasks(conn, flt)


def matching_tasks(bus: IntegrationBus, flt: TaskFilter, after: int, limit: int) -> Items:
    """The next ``limit`` matching tasks with an id greater than ``after`` (ascending)."""
    with bus.reader.connect() as conn:
        return reads.matching_items(conn, flt, after, limit)


def tasks_by_id(bus: IntegrationBus, ids: list[int]) -> Items:
    """The queued tasks among ``ids`` (ascending); ids no longer queued are left out."""
    with bus.reader.connect() as conn:
        return reads.items_by_id(conn, ids)


def read_settings(bus: IntegrationBus) -> dict[str, bool]:
    """The three switches in one query (a missing row means on)."""
    with bus.reader.connect() as conn:
        rows = _read_settings(conn, SETTING_KEYS)
    return {key: flag(rows.get(key)) for key in SETTING_KEYS}


def connector_stats(bus: IntegrationBus) -> list[ConnectorStats]:
    """Per connector: queue counts, the oldest queued task's time, and the last run (lease)."""
    with bus.reader.connect() as conn:
        rows = reads.connector_queues(conn)
    return [
        ConnectorStats(
            name=r.connector_name,
            display_name=r.display_name,
            enabled=bool(r.enabled),
            queued=int(r.queued or 0),
            failed=int(r.failed or 0),
            blocked=int(r.blocked or 0),
            running=bool(r.running),
            last_run_applied=r.last_run_applied,
            last_run_failed=r.last_run_failed,
            last_run_error=r.last_run_error,
            oldest_created_at=as_utc(r.oldest),
            last_run_started_at=as_utc(r.last_run_started_at),
            last_run_finished_at=as_utc(r.last_run_finished_at),
            ordering=Ordering.parse(r.ordering),
            queue_limit=r.queue_limit,
        )
        for r in rows
    ]


def _switch_blockers(bus: IntegrationBus) -> list[Blocker]:
    with bus.reader.connect() as conn:
        off = first_off(_read_settings(conn, (MASTER, PROCESSING)), PROCESSING)
    return [] if off is None else [Blocker("", _SWITCH_BLOCKS[off])]


def lane_report(conn: Connection, connector_id: int, shown: int = LANES_SHOWN) -> LaneReport:
    """An ENTITY connector's halted lanes and waiting tasks: counts (capped), and the first
    ``shown`` of each. Every statement is served by a partial or lane index."""
    halted = [HaltedLane(i.lane, i, n) for i, n in reads.halted_lanes(conn, connector_id, shown)]
    waited = [
        WaitedFor(r.waiting_for, r.awaits, int(r.tasks), int(r.first_task_id), as_utc(r.since))
        for r in reads.waited_for(conn, connector_id, shown)
    ]
    return LaneReport(
        halted=reads.halted_lane_count(conn, connector_id) if halted else 0,
        halted_lanes=halted,
        waiting=reads.waiting_count(conn, connector_id) if waited else 0,
        waited_for=waited,
    )


def lane_report_of(bus: IntegrationBus, connector_name: str) -> LaneReport:
    """``lane_report`` of the connector of that name (of any ordering: a CONNECTOR
    connector's tasks have no lane, so it reports no lanes, only waiting tasks if any)."""
    with bus.reader.connect() as conn:
        found = reads.connectors(conn, connector_name)
        if not found:
            raise ConnectorNotFoundError(not_registered(conn, connector_name))
        return lane_report(conn, found[0][0])


def _lane_blocker(bus: IntegrationBus, name: str, report: LaneReport) -> Blocker:
    parts = []
    if report.halted:
        n = report.halted
        parts.append(f"{report.capped(n)} lane{'' if n == 1 else 's'} halted by an Error task")
    if report.waiting:
        n = report.waiting
        parts.append(f"{report.capped(n)} task{'' if n == 1 else 's'} waiting for an entity")
    reason = "; ".join(parts) + "; its other lanes go on."
    first = report.halted_lanes[0].task if report.halted_lanes else None
    hint = None if first is None else fix_hint(bus.reader, bus.registry, first.task_id)
    return Blocker(name, reason, hint=hint, lanes=report)


def blockers(bus: IntegrationBus, connector: str | None = None) -> list[Blocker]:
    """Why queues do not move: switches that are off, disabled connectors with tasks, and per
    connector the first ERROR task (a run stops there), with how many tasks wait behind it;
    for an ENTITY connector, its halted lanes and waiting tasks instead (``lane_report``)."""
    out = _switch_blockers(bus)
    with bus.reader.connect() as conn:
        for cid, name, enabled, ordering in reads.connectors(conn, connector):
            if not enabled and reads.has_tasks(conn, cid):
                out.append(Blocker(name, "The connector is disabled: its tasks wait."))
            if ordering == Ordering.ENTITY.value:
                report = lane_report(conn, cid)
                if report.halted or report.waiting:
                    out.append(_lane_blocker(bus, name, report))
                continue
            task = reads.first_blocking(conn, cid)
            if task is None:
                continue
            behind = reads.tasks_behind(conn, cid, task.task_id)
            reason = task.error_message or "the task failed"
            hint = fix_hint(bus.reader, bus.registry, task.task_id)
            out.append(Blocker(name, reason, task, behind, hint))
    return out


def with_hint(bus: IntegrationBus, task: TaskInfo) -> TaskInfo:
    """The task with its fix hint (see syncbus.fixhint) filled in."""
    if task.error_message is None:
        return task
    return dataclasses.replace(task, hint=fix_hint(bus.reader, bus.registry, task.task_id))


def task_detail(bus: IntegrationBus, task_id: int) -> TaskDetail | None:
    """A task with its stored content (pretty JSON), translation records and error history."""
    with bus.reader.connect() as conn:
        info = reads.task(conn, task_id)
        if info is None:
            return None
        raw = reads.task_data(conn, task_id) or ""
        log = reads.task_log(conn, task_id)
        position = reads.position(conn, info.connector_name, task_id)
        in_lane = (0, 0)
        halted_by = _halted_by(conn, [info]).get(task_id)
        if info.lane is not None:
            in_lane = reads.lane_position(conn, info.connector_name, info.lane, task_id)
    info = with_hint(bus, info)
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        return TaskDetail(info, raw, [], log, position, str(exc), *in_lane, halted_by)
    content = {k: v for k, v in body.items() if k not in ("tr", "v")}
    pretty = json.dumps(content, indent=2, ensure_ascii=False, sort_keys=False)
    records = [r for r in body.get("tr") or [] if isinstance(r, dict)]
    return TaskDetail(info, pretty, records, log, position, None, *in_lane, halted_by)


def event_page(
    bus: IntegrationBus, *, before: int | None = None, after: int | None = None, limit: int = 50
) -> EventPage:
    """Events newest first, by key: older than ``before``, or newer than ``after``."""
    newer = after is not None and before is None
    cursor = after if newer else before
    with bus.reader.connect() as conn:
        events = reads.events(conn, cursor=cursor, descending=not newer, limit=limit + 1)
    more = len(events) > limit
    events = events[:limit]
    if newer:
        events.reverse()
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
    with bus.reader.connect() as conn:
        return reads.connector_names(conn)


def type_names(bus: IntegrationBus) -> list[str]:
    """Object types and page types a task may carry: registered here, or declared in the
    database by another process."""
    names = set(bus.registry.object_types) | set(bus.registry.page_types)
    with bus.reader.connect() as conn:
        names |= reads.declared_type_names(conn)
    return sorted(names - {ROOT_CLASS})  # a site's root: no task writes it


# -- content ----------------------------------------------------------------------------------
def current_object(
    bus: IntegrationBus, object_type: str, code_name: str, site_name: str | None
) -> dict[str, Any]:
    """An object as it is now, by code name (or GUID), for the HTTP API and the command line:
    every refusal says why (unknown type or site, a binding, a site-bound type without its
    site, no name, no such object)."""
    ot = bus.registry.object_type(object_type)  # unknown: names the known ones
    if ot.key_column is None:
        raise InvalidObjectError(
            f"{object_type} objects have no code name or GUID, so they are not read by name "
            "(the tasks that wrote one: its history, by the name its lane gives it)"
        )
    if ot.site_column and not site_name:
        raise InvalidObjectError(
            f"{object_type} objects belong to a site: give its site name (site_name, --site)"
        )
    if not code_name:
        raise InvalidObjectError(f"a code name (or GUID) of the {object_type} is needed")
    found = bus.get_object(object_type, code_name, site_name)
    if found is None:
        where = f" on site {site_name!r}" if site_name else ""
        raise ObjectNotFoundError(f"no {object_type} {code_name!r}{where}")
    return found


def current_page(
    bus: IntegrationBus, site_name: str, alias_path: str, culture: str
) -> dict[str, Any]:
    """A page as it is now (its node, its document in ``culture`` and the page type's
    fields), by site and alias path, for the HTTP API and the command line: an unknown site
    is named; a page not in that culture says which cultures it has. Repeated slashes in the
    path are one; the culture is read in its usual case (``en-us`` is ``en-US``)."""
    if not site_name:
        raise InvalidObjectError("a page is read on a site: give its site name")
    if not culture.strip():
        raise InvalidObjectError("a page is read in a culture: give one, such as 'en-US'")
    if (problem := culture_problem(culture)) is not None:  # as logging refuses it
        raise InvalidObjectError(f"culture {show(culture)} is no culture code: {problem}")
    path = "/" + "/".join(part for part in alias_path.split("/") if part)
    culture = canonical_culture(culture)
    found = bus.get_page(site_name, path, culture)  # an unknown site: SiteNotFoundError
    if found is not None:
        return found
    cultures = bus.page_cultures(site_name, path)
    where = f"no page {show(path)} on site {show(site_name)}"
    if path == "/":
        raise ObjectNotFoundError(
            f"{where}: the root of a site's tree is a node without a document; read the "
            "pages below it"
        )
    if cultures:
        raise ObjectNotFoundError(
            f"{where} in culture {show(culture)}; it is in {', '.join(map(show, cultures))}"
        )
    raise ObjectNotFoundError(where)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def plain(row: dict[str, Any]) -> dict[str, Any]:
    """A content row as JSON carries it: times and dates as ISO text, a float that is not
    finite (stored outside the bus) as the string NaN, Infinity or -Infinity."""
    text = json.dumps(row, default=_jsonable, allow_nan=True)
    return cast(dict[str, Any], json.loads(text, parse_constant=str))
