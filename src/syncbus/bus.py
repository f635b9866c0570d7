"""The ``IntegrationBus`` facade: wires the store, the type registry, the connectors, intake
and processing (``syncbus.engine``), and delegates. It holds no SQL: statements on the bus's
tables are in ``syncbus.store`` (reads in ``store.reads``, the admin actions' in
``store.admin``, connectors in ``store.connectors``, switches in ``store.switches``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from syncbus import lineage
from syncbus.applier import Applier
from syncbus.connector import BaseIntegrationConnector
from syncbus.connectors import ConnectorRegistry, ConnectorTarget
from syncbus.content.lanes import binding_example
from syncbus.content.objects import ObjectStore
from syncbus.content.pages import PageStore
from syncbus.content.paths import canonical_culture
from syncbus.content.registry import TypeRegistry
from syncbus.content.tables import BUILTIN_TABLES
from syncbus.content.types import ObjectType, PageType
from syncbus.engine import Processor, ProgressCallback
from syncbus.enums import ProcessType, TaskDataType, TaskType
from syncbus.errors import (
    ConnectorDisabledError,
    ConnectorNotFoundError,
    IntegrationDisabledError,
    InvalidFilterError,
    InvalidObjectError,
    SiteNotFoundError,
    TaskBusyError,
    TaskNotFoundError,
)
from syncbus.hooks import Hooks, TaskLogged
from syncbus.intake import CHILD_LANES, Intake, LogOutcome, TaskRequest, without_child_lanes
from syncbus.lineage import DELETED, Recorder, decode_or_none
from syncbus.model import (
    ConnectorInfo,
    EventLogEntry,
    ProcessResult,
    SyncLogEntry,
    TaskInfo,
    TaskRecord,
    WorkerInfo,
)
from syncbus.policies import ConnectorRules
from syncbus.settings import Settings
from syncbus.store import history, migrate, reads, workers
from syncbus.store.admin import by_connector, delete_task, delete_tasks
from syncbus.store.connectors import (
    connector_by_id,
    connector_by_name,
    connectors_with_tasks,
    not_registered,
)
from syncbus.store.db import BUSY_TIMEOUT, make_engine, stamp, utcnow
from syncbus.store.dialect import dialect_of, is_lock_wait
from syncbus.store.enqueue import notify_workers, replace_child_lanes, replace_object
from syncbus.store.logs import write_event
from syncbus.store.switches import why_not_processing
from syncbus.store.tasks import load_ids
from syncbus.store.types import save_type_declarations

_site = BUILTIN_TABLES["cms.site"]
ADMIN_WAIT_MS = 3000


# How much of a replaced external object the event log keeps (JSON text).
_REPLACED_SHOWN = 4_000


class IntegrationBus:
    """An integration bus on one database (SQLite file or PostgreSQL).

    ``url`` defaults to ``SYNCBUS_DATABASE_URL``, else ``sqlite:///syncbus.db``.
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        batch_size: int = 200,
        lease_seconds: float = 30.0,
        apply_timeout: float = 300.0,
        echo: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if isinstance(apply_timeout, bool) or not (
            isinstance(apply_timeout, int | float) and 0 <= apply_timeout < math.inf
        ):
            raise ValueError("apply_timeout must be a finite number of seconds >= 0 (0: none)")
        self.engine: sa.Engine = make_engine(url, echo=echo, idle_in_transaction_s=lease_seconds)
        # Admin actions on one task wait a few seconds for locks at most, then answer busy.
        self._admin_db = self.engine.execution_options(**{BUSY_TIMEOUT: ADMIN_WAIT_MS})
        # Reads begin DEFERRED on SQLite, so they never wait for (or block) a writer.
        self.reader: sa.Engine = self.engine.execution_options(readonly=True)
        self.registry = TypeRegistry(loader=self._load_declaration, lister=self._declared_names)
        self.objects = ObjectStore(self.registry)
        self.pages = PageStore(self.registry)
        self.connectors = ConnectorRegistry(self.engine, self.reader)
        self.settings = Settings(self.engine, self.reader)
        self.hooks = Hooks()
        self.intake = Intake(
            self.engine, self.registry, self.connectors, self.hooks.task_logged, self.hooks
        )
        self.runner = Processor(
            self.engine,
            self.registry,
            Applier(self.registry, self.objects, self.pages),
            batch_size=batch_size,
            lease_seconds=lease_seconds,
            apply_timeout=float(apply_timeout),
            hooks=self.hooks,
        )

    def __repr__(self) -> str:
        return f"IntegrationBus({self.engine.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> IntegrationBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema and types ---------------------------------------------------------------
    def create_schema(self) -> None:
        """Apply migrations and create the tables of user-defined types. Idempotent."""
        migrate.upgrade(self.engine)
        declarations = self.registry.declarations()
        if not declarations and not self.registry.has_user_tables():
            return  # nothing to write: no wait for SQLite's write lock
        with self.engine.begin() as conn:
            self.registry.create_user_tables(conn)
            save_type_declarations(conn, declarations)

    def _load_declaration(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            with self.reader.connect() as conn:
                raw = reads.type_declaration(conn, kind, name)
        except sa.exc.DBAPIError:  # no schema yet
            return None
        return None if raw is None else dict(json.loads(raw))

    def _declared_names(self, kind: str) -> set[str]:
        try:
            with self.reader.connect() as conn:
                return reads.declared_type_names(conn, kind)
        except sa.exc.DBAPIError:  # no schema yet
            return set()

    def register_object_type(self, object_type: ObjectType) -> None:
        self.registry.register_object_type(object_type)

    def register_page_type(self, page_type: PageType) -> None:
        self.registry.register_page_type(page_type)

    def create_site(
        self, site_name: str, display_name: str | None = None, domain: str | None = None
    ) -> int:
        """Create a site (or return the id of the one with that name)."""
        with self.engine.begin() as conn:
            ot = self.registry.object_type("cms.site")
            row = {
                "site_name": site_name,
                "site_display_name": display_name or site_name,
                "site_domain": domain,
            }
            existing = self.objects.find_id(conn, ot, row, None)
            if existing is not None:
                return existing
            return self.objects.upsert(conn, ot, row, None)

    # -- connectors -----------------------------------------------------------------------
    def register_connector(self, connector: ConnectorTarget) -> BaseIntegrationConnector:
        return self.connectors.register(connector)

    def get_connector(self, name: str) -> BaseIntegrationConnector:
        return self.connectors.get(name)

    def set_connector_enabled(self, name: str, enabled: bool) -> None:
        self.connectors.set_enabled(name, enabled)

    def set_queue_limit(self, connector_name: str, limit: int | None) -> None:
        """Refuse logging (``QueueFullError``) while the connector has ``limit`` or more tasks
        queued; None removes the limit. Stored in the database: it binds every process that
        logs (CONTRACT §9)."""
        self.connectors.set_queue_limit(connector_name, limit)

    def list_connectors(self) -> list[ConnectorInfo]:
        return self.connectors.list()

    def list_workers(self) -> list[WorkerInfo]:
        """The processes that run connectors (``syncbus serve``, ``syncbus worker``, an app's
        own ``Dispatcher``), newest first: alive while seen within three heartbeats; one that
        stopped without saying so (killed, frozen) stays listed, not alive, for an hour."""
        with self.reader.connect() as conn:
            rows = workers.listing(conn)
        return [
            WorkerInfo(
                worker_id=str(r.worker_id),
                kind=str(r.kind),
                host=str(r.host),
                pid=int(r.pid),
                threads=int(r.threads),
                started_at=stamp(r.started_at),
                seen_seconds_ago=max(0.0, float(r.ago)),
                alive=workers.is_alive(float(r.ago), float(r.heartbeat)),
            )
            for r in rows
        ]

    # -- logging --------------------------------------------------------------------------
    def add_task_listener(self, listener: Callable[[str, int], None]) -> None:
        """Call ``listener(connector_name, task_id)`` after each task this bus logs.
        (A shortcut for ``bus.hooks.subscribe`` with a ``task_logged`` method.)"""
        self.hooks.subscribe(TaskLogged(listener))

    def process_external_task(
        self,
        connector_name: str,
        external_obj: Any,
        process_type: ProcessType | str = ProcessType.DEFAULT,
        task_type: TaskType | str = TaskType.CREATE_OBJECT,
        data_type: TaskDataType | str = TaskDataType.SIMPLE,
        site_name: str | None = None,
        idempotency_key: str | None = None,
    ) -> int | None:
        """Log an incoming task; returns its id, or None if the connector skipped the object."""
        task = TaskRequest(
            external_obj, process_type, task_type, data_type, site_name, idempotency_key
        )
        return self.intake.log(connector_name, task).task_id

    def log_tasks(self, connector_name: str, tasks: list[TaskRequest]) -> list[LogOutcome]:
        """Log several tasks of one connector, all or nothing (one transaction)."""
        return self.intake.log_many(connector_name, tasks)

    # -- processing -----------------------------------------------------------------------
    def wake_workers(self, connector_name: str | None = None) -> None:
        """Ask the workers of other processes to run a connector (None: every connector with
        tasks) now. PostgreSQL notifies them at once; on SQLite, which has no channel, they see
        it at their next poll (every second) and look at every connector."""
        with self.engine.begin() as conn:
            notify_workers(conn, connector_name or "")

    def process_tasks(
        self,
        connector_name: str | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
    ) -> dict[str, ProcessResult]:
        """Process queued tasks of one connector, or of every connector with tasks.

        Each connector runs in its own thread; at most one run per connector at a time
        across all processes sharing the database.
        """
        with self.reader.connect() as conn:
            blocked = why_not_processing(conn)
            if connector_name is not None:
                one = connector_by_name(conn, connector_name)
                if one is None:
                    raise ConnectorNotFoundError(not_registered(conn, connector_name))
                rows = [one]
            else:
                rows = connectors_with_tasks(conn)
        results: dict[str, ProcessResult] = {}
        runnable = []
        for row in rows:
            reason = blocked or (None if row.enabled else "the connector is disabled")
            if reason:
                results[row.connector_name] = ProcessResult(
                    row.connector_name, not_run_reason=reason
                )
            else:
                runnable.append(row)
        if len(runnable) == 1:
            results[runnable[0].connector_name] = self._run(runnable[0], on_progress, stop)
        elif runnable:
            with ThreadPoolExecutor(max_workers=min(len(runnable), 16)) as pool:
                futures = {
                    r.connector_name: pool.submit(self._run, r, on_progress, stop) for r in runnable
                }
                for name, future in futures.items():
                    results[name] = future.result()
        return results

    def _run(
        self, row: Any, on_progress: ProgressCallback | None, stop: threading.Event | None
    ) -> ProcessResult:
        return self.runner.run(
            row.connector_id,
            row.connector_name,
            on_progress,
            stop,
            rules=ConnectorRules.of(row),
        )

    def synchronize_task(self, task_id: int) -> bool:
        """Run one task now, out of order. True if it was applied (and removed); on failure
        the error is logged and the task keeps its process type (DEFAULT becomes ERROR).
        Never waits on a running batch: a task it holds raises ``TaskBusyError``."""
        with self._admin_tx(task_id) as conn:
            row = self.runner.lock_task(conn, task_id)
            if row is None:
                raise TaskNotFoundError(
                    f"no queued task with id {task_id} (a task leaves the queue when it is "
                    "applied or deleted)"
                )
            connector = connector_by_id(conn, row.connector_id)
            blocked = why_not_processing(conn)
            if blocked:
                raise IntegrationDisabledError(f"cannot synchronize task {task_id}: {blocked}")
            if not connector.enabled:
                raise ConnectorDisabledError(
                    f"cannot synchronize task {task_id}: connector "
                    f"{connector.connector_name!r} is disabled; enable it first"
                )
            applied, error = self.runner.synchronize(conn, row)
            if applied:  # it may have stopped its queue: workers elsewhere go on at once
                notify_workers(conn, connector.connector_name)
        if applied:
            self.hooks.task_applied(connector.connector_name, task_id, True)
        else:
            self.hooks.task_failed(connector.connector_name, task_id, error or "", True)
        return applied

    def delete_task(self, task_id: int, *, by: str | None = None) -> None:
        """Remove a task from the queue (with its log; its record stays, state "deleted").
        A missing task is an error; a task that a running batch holds raises
        ``TaskBusyError`` instead of waiting. With ``by`` (who deleted it), the event log
        says so (``DELETETASK``)."""
        with self._admin_tx(task_id) as conn:
            row = self.runner.lock_task(conn, task_id)
            if row is None:
                raise TaskNotFoundError(f"no queued task with id {task_id}")
            name = connector_by_id(conn, row.connector_id).connector_name
            self._record_deleted(conn, [task_id])
            if by:
                write_event(
                    conn,
                    "Integration",
                    "DELETETASK",
                    f"task {task_id} ({row.title}) of connector {name!r} was deleted by {by}",
                    "I",
                )
            delete_task(conn, task_id)
            notify_workers(conn, name)  # it may have stopped its queue: go on at once
        self.hooks.tasks_deleted(name, [task_id])

    def delete_tasks(self, task_ids: list[int]) -> tuple[int, set[int]]:
        """Remove several queued tasks (a few hundred at most) in one transaction, leaving
        their records; tasks a running batch holds are skipped, not waited for. How many
        went, and the ids skipped."""
        gone: dict[str, list[int]] = {}

        def before(conn: sa.Connection, ids: list[int]) -> None:
            gone.update(by_connector(conn, ids))
            self._record_deleted(conn, ids)

        with self.engine.begin() as conn:
            count, busy = delete_tasks(conn, task_ids, before)
            for name in gone:  # one of them may have stopped its queue: go on at once
                notify_workers(conn, name)
        for name, ids in gone.items():
            self.hooks.tasks_deleted(name, ids)
        return count, busy

    def _record_deleted(self, conn: sa.Connection, task_ids: list[int]) -> None:
        if not self.runner.keeps_history(conn):
            return
        recorder = Recorder(self.registry, utcnow())
        for row in load_ids(conn, task_ids):
            recorder.finished(row, decode_or_none(row.data), DELETED)
        recorder.write(conn)

    # -- history and lineage (CONTRACT §10) ----------------------------------------------
    def prune(
        self,
        *,
        now: dt.datetime | None = None,
        batch: int = 1000,
        stop: threading.Event | None = None,
    ) -> tuple[int, int]:
        """Apply the retentions: delete task records finished more than
        ``settings.history_retention_days`` ago and forget idempotency keys first seen more
        than ``settings.idempotency_retention_days`` ago whose task has left the queue. In
        bounded deletes of ``batch`` rows, each its own short transaction, so a long backlog
        never holds locks for long (workers prune in the background). How many records and
        keys went."""
        now = now or utcnow()
        settings = self.settings
        history_before = now - dt.timedelta(days=settings.history_retention_days)
        keys_before = now - dt.timedelta(days=settings.idempotency_retention_days)
        removed = [0, 0]
        for i, step in enumerate((history.prune, history.prune_keys)):
            before = history_before if i == 0 else keys_before
            while stop is None or not stop.is_set():
                with self.engine.begin() as conn:
                    gone = step(conn, before, batch)
                removed[i] += gone
                if gone < batch:
                    break
        return removed[0], removed[1]

    def task_history(self, task_id: int) -> TaskRecord | None:
        """What happened to a task: its record, queued or finished within the retention
        (``settings.history_retention_days``); None past it or for an unknown id."""
        with self.reader.connect() as conn:
            row = history.queued(conn, task_id)
            if row is not None:
                return lineage.queued_record(self.registry, row, reads.task_log(conn, task_id))
            done = history.finished(conn, task_id)
            if done is None:
                return None
            carried = history.carried(conn, [task_id]).get(task_id, ())
        return lineage.finished_record(self.registry, done, carried)

    def object_history(
        self, object_type: str, code_name: str, site_name: str | None = None, *, limit: int = 100
    ) -> list[TaskRecord]:
        """The tasks that wrote an object (by its code name, or GUID for types without one),
        newest first, within the retention; ``limit`` of them at most."""
        ot = self.registry.object_type(object_type)  # unknown: an error, not "none"
        name = ot.name
        if ot.key_column is None and not str(code_name).startswith("("):
            form = binding_example(ot, self.registry.object_type)
            raise InvalidFilterError(
                f"{name} is a binding type: its objects have no code name of their own and "
                f"are named by their two ends, in this form: {form}"
                " (each end's type and code name, @site where that type is site-bound; for a "
                "task logged as Simple, the type and the id given: cms.user#7)"
            )
        with self.reader.connect() as conn:
            rows = history.of_object(conn, name, str(code_name), site_name, lineage.WROTE, limit)
            carried = history.carried(conn, (int(r.task_id) for r in rows))
        return list(lineage.records(self.registry, rows, carried))

    def replace_task_object(
        self, task_id: int, external_obj: Any, *, by: str | None = None
    ) -> TaskInfo:
        """Edit and replay: give a queued or failed task a new external object. The
        connector prepares it and captures its translation records again, as at logging
        (and raises as logging does, changing nothing); the result replaces the task's
        object in place: same id, same place in its queue, its error log kept. It no
        longer waits or backs off, so its next run (or ``synchronize_task``) tries it.
        Raises ``TaskNotFoundError`` for a task no longer queued. The event log keeps the
        object it replaced (``REPLACETASK``), saying ``by`` whom when given."""
        with self.reader.connect() as conn:
            row = history.queued(conn, task_id)
        if row is None:
            raise TaskNotFoundError(
                f"no queued task with id {task_id}: only a queued or failed task's object "
                "can be replaced"
            )
        built = self.intake.build(
            row.connector_name,
            external_obj,
            TaskType.parse(row.task_type),
            TaskDataType.parse(row.data_type),
            row.site_name,
        )
        if built is None:
            raise InvalidObjectError(
                f"connector {row.connector_name!r} skipped the new object "
                "(prepare_internal_object returned None): the task was left as it was"
            )
        with self._admin_tx(task_id) as conn:
            if self.runner.lock_task(conn, task_id) is None:
                raise TaskNotFoundError(f"no queued task with id {task_id}")
            before = history.queued(conn, task_id)
            replace_object(conn, task_id, without_child_lanes(built))
            replace_child_lanes(conn, task_id, built.get(CHILD_LANES, []))
            # The record shows the object as it is now; what it replaced stays in the log.
            was = "not kept" if before is None or before.external is None else before.external
            write_event(
                conn,
                "Integration",
                "REPLACETASK",
                f"task {task_id}'s external object was replaced"
                + (f" by {by}" if by else "")
                + f"; it was: {was[:_REPLACED_SHOWN]}"
                + (" ..." if len(was) > _REPLACED_SHOWN else ""),
                "I",
            )
            notify_workers(conn, row.connector_name)  # an Error task runs again: wake them
        self.hooks.task_replaced(row.connector_name, task_id)
        info = self.get_task(task_id)
        if info is None:  # applied or deleted between the replace and this read
            raise TaskNotFoundError(f"task {task_id} left the queue right after its replace")
        return info

    @contextlib.contextmanager
    def _admin_tx(self, task_id: int) -> Iterator[sa.Connection]:
        """A transaction for an admin action on one task that gives up on locks after a few
        seconds (SQLite: the write lock; PostgreSQL: row locks) and says the task is busy."""
        try:
            with self._admin_db.begin() as conn:
                dialect_of(conn).bound_lock_wait(conn, ADMIN_WAIT_MS)
                yield conn
        except sa.exc.OperationalError as exc:
            if not is_lock_wait(exc):
                raise
            raise TaskBusyError(
                f"task {task_id} is being applied by a running batch right now; "
                "try again in a moment"
            ) from exc

    # -- reading the queue (statements in syncbus.store.reads) -----------------------------
    def list_tasks(
        self,
        connector_name: str | None = None,
        *,
        after: int | None = None,
        limit: int | None = None,
        lane: str | None = None,
        waiting: bool = False,
    ) -> list[TaskInfo]:
        """Pending and failed incoming tasks, in ascending task id.

        ``after`` and ``limit`` page through a long queue by key (ids greater than ``after``).
        ``lane`` keeps the tasks of one lane (its exact key, as ``TaskInfo.lane`` shows it);
        ``waiting`` only the tasks that wait for a missing reference (Ordering.ENTITY).
        Raises ``InvalidFilterError`` for a lane key no task can have.
        """
        if lane is not None and (why := reads.bad_lane(lane)) is not None:
            raise InvalidFilterError(f"invalid lane {lane[:80]!r}: {why}")
        flt = reads.TaskFilter(connector=connector_name, lane=lane, waiting=waiting)
        with self.reader.connect() as conn:
            return reads.tasks(conn, flt, cursor=after, limit=limit)

    def get_task(self, task_id: int) -> TaskInfo | None:
        with self.reader.connect() as conn:
            return reads.task(conn, task_id)

    def get_task_data(self, task_id: int) -> str | None:
        """The stored payload (JSON) of a task: the internal object and translation records."""
        with self.reader.connect() as conn:
            return reads.task_data(conn, task_id)

    def queue_size(self, connector_name: str | None = None) -> int:
        with self.reader.connect() as conn:
            return reads.count_tasks(conn, reads.TaskFilter(connector=connector_name))

    def task_log(self, task_id: int) -> list[SyncLogEntry]:
        with self.reader.connect() as conn:
            return reads.task_log(conn, task_id)

    def event_log(self) -> list[EventLogEntry]:
        with self.reader.connect() as conn:
            return reads.events(conn)

    # -- reading content ------------------------------------------------------------------
    def _site_id(self, conn: sa.Connection, site_name: str) -> int:
        sid = conn.execute(
            sa.select(_site.c.site_id).where(_site.c.site_name == site_name)
        ).scalar()
        if sid is None:
            raise SiteNotFoundError(f"site {site_name!r} not found")
        return int(sid)

    def get_object(
        self, object_type: str, code_name: str, site_name: str | None = None
    ) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            site_id = self._site_id(conn, site_name) if site_name else None
            return self.objects.get(conn, object_type, code_name, site_id)

    def find_objects(self, object_type: str, **column_equals: Any) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            return self.objects.find(conn, object_type, column_equals)

    def get_page(
        self, site_name: str, alias_path: str, culture: str = "en-US"
    ) -> dict[str, Any] | None:
        culture = canonical_culture(culture)  # en-us reads en-US, as logging stores it
        with self.reader.connect() as conn:
            return self.pages.get(conn, self._site_id(conn, site_name), alias_path, culture)

    def page_cultures(self, site_name: str, alias_path: str) -> list[str]:
        """The cultures the page at ``alias_path`` has a document in, sorted (none: no page
        there)."""
        with self.reader.connect() as conn:
            return self.pages.cultures(conn, self._site_id(conn, site_name), alias_path)

    def close(self) -> None:
        self.engine.dispose()
