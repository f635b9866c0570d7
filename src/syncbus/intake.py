"""Logging incoming tasks: check, prepare, capture translation records, compute the lane
(connectors whose ordering is ENTITY: `syncbus.content.lanes`), serialize; the SQL that
enqueues them is `syncbus.store.enqueue`."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import sqlalchemy as sa

from syncbus import tracing
from syncbus.connector import BaseIntegrationConnector
from syncbus.connectors import ConnectorRegistry
from syncbus.content.lanes import binding_identity, child_lanes, lane_of
from syncbus.content.paths import canonical_culture
from syncbus.content.registry import TypeRegistry
from syncbus.content.tables import BUILTIN_TABLES
from syncbus.content.types import ObjectType
from syncbus.content.validation import check_prepared, check_text
from syncbus.enums import Ordering, ProcessType, TaskDataType, TaskType
from syncbus.errors import (
    ConfigurationError,
    ConnectorDisabledError,
    ConnectorNotFoundError,
    IntegrationDisabledError,
    InvalidObjectError,
    QueueFullError,
    SchemaMissingError,
    SiteNotFoundError,
    SyncBusError,
)
from syncbus.hooks import Hooks
from syncbus.model import InternalObject, Page
from syncbus.payload import Payload, encode
from syncbus.store import enqueue, leases, switches, tasks
from syncbus.store.connectors import not_registered
from syncbus.store.db import utcnow
from syncbus.store.dialect import dialect_of
from syncbus.store.enqueue import KEY_MAX, NAME_MAX, SITE_MAX, LogState
from syncbus.store.switches import SWITCHED_OFF
from syncbus.tracing import traceparent
from syncbus.translation import Capture

_site = BUILTIN_TABLES["cms.site"]
# Every check of a logging call in one query; the site is the content layer's part.
# Retry-After of a full queue that will not drain by itself (its head stopped it).
_STUCK_RETRY_AFTER = 60.0
_STATE_QUERY = enqueue.state_query(
    lambda name: sa.select(_site.c.site_id).where(_site.c.site_name == name).scalar_subquery()
)

# A task logged as Error stops its connector before it ever ran (CONTRACT §4): the reason is
# on the task from the start, so the dashboard, the banner and the run's result say why.
LOGGED_AS_ERROR = (
    "logged with process type Error: the connector stops at this task until it is "
    "synchronized or deleted"
)
# Under Ordering.ENTITY it stops its lane only (CONTRACT §8).
LOGGED_AS_ERROR_IN_LANE = (
    "logged with process type Error: its lane stops at this task until it is synchronized or "
    "deleted; the connector's other lanes go on"
)


_Parsed = tuple[ProcessType, TaskType, TaskDataType]


def _parse(req: TaskRequest) -> _Parsed:
    """The task's enumerations; refuses what no task could be logged with."""
    ptype = ProcessType.parse(req.process_type)
    key = req.idempotency_key
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise InvalidObjectError("idempotency_key must be a non-empty string")
    if key is not None:
        check_text("idempotency_key", key, KEY_MAX)
    if req.site_name is not None:
        check_text("site_name", req.site_name, SITE_MAX)
    return ptype, TaskType.parse(req.task_type), TaskDataType.parse(req.data_type)


@contextlib.contextmanager
def _naming(index: int, count: int) -> Iterator[None]:
    """In a batch of several, an error of one task says which (its place in the list, from
    0, as in the JSON array of the bulk route); errors of the whole call (switched off, no
    such connector) are left as they are."""
    try:
        yield
    except SyncBusError as exc:
        whole = isinstance(exc, IntegrationDisabledError | ConnectorNotFoundError)
        if count > 1 and not whole and exc.args and isinstance(exc.args[0], str):
            exc.args = (f"task {index} of the batch: {exc.args[0]}", *exc.args[1:])
        raise
    except Exception as exc:  # the connector's own: its type stays, a note says which task
        if count > 1:
            exc.add_note(f"task {index} of the batch")
            with contextlib.suppress(AttributeError):
                exc.syncbus_batch_task = index  # type: ignore[attr-defined]
        raise


def _logged_error(ptype: ProcessType, lane: str | None) -> str | None:
    if ptype is not ProcessType.ERROR:
        return None
    return LOGGED_AS_ERROR if lane is None else LOGGED_AS_ERROR_IN_LANE


def _encode(payload: Payload) -> str:
    try:
        return encode(payload)
    except (TypeError, ValueError, RecursionError) as exc:  # a value JSON cannot carry
        raise InvalidObjectError(f"the prepared object cannot be stored: {exc}") from None


def external_json(obj: Any) -> str | None:
    """The external object as logged, for its record (CONTRACT §10); None when JSON cannot
    carry it (an object of the connector's own class, say): nothing is refused for that."""
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None


def object_title(task_type: TaskType, ot: ObjectType, data: dict[str, Any]) -> str:
    if ot.key_column and data.get(ot.key_column) is not None:
        name = str(data[ot.key_column])
    else:
        name = ", ".join(f"{c}={data.get(c)!r}" for c in ot.identity_columns())
    return f"{task_type.spec.verb} {ot.name} '{name}'"[:450]


def page_title(task_type: TaskType, page: Page) -> str:
    where = page.parent_path.rstrip("/") + "/" if page.parent_path else ""
    return f"{task_type.spec.verb} '{where}{page.alias or page.name}' ({page.culture})"[:450]


class Intake:
    """``process_external_task``: everything from the external object to a committed task row."""

    def __init__(
        self,
        db: sa.Engine,
        registry: TypeRegistry,
        connectors: ConnectorRegistry,
        on_logged: Callable[[str, int], None] | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.connectors = connectors
        self.on_logged = on_logged
        self.hooks = hooks or Hooks()
        # Group commit: concurrent single-task calls share one transaction (None: off).
        self.group: _Group | None = _Group(self)
        self._tables_seen: set[str] = set()  # content tables known to exist

    def log(self, connector_name: str, request: TaskRequest) -> LogOutcome:
        """Log one task (``process_external_task``).

        With group commit (the default), the checks and the connector's preparation run in the
        caller's thread; the insert joins whatever other callers are inserting at the same
        moment: one transaction and one commit for all of them, each answered with its own id
        or its own error (``_Group``). Traced as ``syncbus.log``, as ``log_many``."""
        if self.group is None:
            return self.log_many(connector_name, [request])[0]
        with tracing.log_call(connector_name, [request.traceparent]) as trace:
            request = _stamped([request], trace.keep)[0]
            outcome = self._log_one(self.group, connector_name, request)
            trace.logged([outcome.task_id])
        return outcome

    def _log_one(self, group: _Group, connector_name: str, request: TaskRequest) -> LogOutcome:
        check_text("connector name", connector_name, NAME_MAX)
        parsed = _parse(request)
        checked: list[LogState] = []
        with self.db.connect() as conn:
            dialect = dialect_of(conn)
            dialect.reads_without_transaction(conn, True)
            prepared = self._prepare(conn, connector_name, request, parsed, {}, checked)
            conn.rollback()
            dialect.reads_without_transaction(conn, False)
            if isinstance(prepared, LogOutcome):
                return prepared
        if checked and checked[0].queue_limit is not None:
            # Backpressure counts the queue under the connector's lock: alone, as before.
            return self._insert_alone(connector_name, prepared, int(checked[0].queue_limit))
        # The connection went back to the pool first: a caller waiting for its group holds
        # none, so the group can grow past the pool's size (only its leader needs one).
        outcome = group.submit(connector_name, prepared)
        if self.on_logged is not None and outcome.created and outcome.task_id is not None:
            self.on_logged(connector_name, outcome.task_id)
        return outcome

    def log_each(self, calls: Sequence[tuple[str, TaskRequest]]) -> list[LogOutcome | Exception]:
        """Single-task logging calls that arrived together, each with its own outcome or its own
        error, exactly as if each had called ``log`` alone (the HTTP service gathers its
        requests into such groups: one trip to a worker thread for all of them).

        Each call is checked and prepared on its own (one bad call fails only itself); the
        checks read once per connector and site, as a batch's do; the tasks then share one
        transaction and one commit (``insert_together``). Tasks of a connector with a queue
        limit are inserted one by one, each counted under the connector's lock. Not traced:
        the caller passes each request's ``traceparent`` as it should be kept."""
        results, together, limited = self._prepare_each(calls)
        if together:
            self.insert_together([w for _, w in together])
            for i, w in together:
                results[i] = w.error if isinstance(w.error, Exception) else w.outcome
            if self.on_logged is not None:
                for _, w in together:
                    if w.outcome is not None and w.outcome.created:
                        assert w.outcome.task_id is not None
                        self.on_logged(w.connector_name, w.outcome.task_id)
        for i, name, row, limit in limited:  # these wake the workers themselves
            try:
                results[i] = self._insert_alone(name, row, limit)
            except Exception as exc:
                results[i] = exc
        assert all(r is not None for r in results)
        return cast(list[LogOutcome | Exception], results)

    def _prepare_each(
        self, calls: Sequence[tuple[str, TaskRequest]]
    ) -> tuple[
        list[LogOutcome | Exception | None],
        list[tuple[int, _Waiting]],
        list[tuple[int, str, dict[str, Any], int]],
    ]:
        """``log_each``'s checks and preparation: each call's outcome or error where it has
        one already, the tasks to insert together, and those to insert alone (queue limit)."""
        results: list[LogOutcome | Exception | None] = [None] * len(calls)
        together: list[tuple[int, _Waiting]] = []
        limited: list[tuple[int, str, dict[str, Any], int]] = []
        states: dict[str, dict[str | None, LogState]] = {}
        limits: dict[str, int | None] = {}
        start = 0
        while start < len(calls):  # a connection lost on the way: the rest on a new one
            with self.db.connect() as conn:
                dialect = dialect_of(conn)
                dialect.reads_without_transaction(conn, True)
                for i in range(start, len(calls)):
                    start = i + 1
                    name, request = calls[i]
                    checked: list[LogState] = []
                    try:
                        check_text("connector name", name, NAME_MAX)
                        parsed = _parse(request)
                        prepared = self._prepare(
                            conn, name, request, parsed, states.setdefault(name, {}), checked
                        )
                    except Exception as exc:
                        results[i] = exc
                        if isinstance(exc, sa.exc.DBAPIError):
                            break
                        continue
                    if checked:
                        limits[name] = checked[0].queue_limit
                    limit = limits.get(name)
                    if isinstance(prepared, LogOutcome):
                        results[i] = prepared
                    elif limit is not None:
                        limited.append((i, name, prepared, int(limit)))
                    else:
                        together.append((i, _Waiting(name, prepared)))
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    conn.rollback()
                    dialect.reads_without_transaction(conn, False)
        return results, together, limited

    def insert_together(self, group: list[_Waiting]) -> None:
        """Insert prepared tasks (of any connectors) in one transaction and commit once,
        connector by connector in order of arrival, under each connector's logging lock
        (taken in connector id order: two groups never deadlock). Each item gets its outcome
        or its error: should an insert fail, each task is inserted alone, so one bad task
        fails itself and no other; should the COMMIT fail, every item gets its error (the
        commit may have gone through: inserting again could log a task twice)."""
        by_connector: dict[int, list[_Waiting]] = {}
        for item in group:
            by_connector.setdefault(int(item.row["connector_id"]), []).append(item)
        committing = False
        try:
            with self.db.connect() as conn:
                results: list[tuple[_Waiting, LogOutcome]] = []
                try:
                    for _, items in sorted(by_connector.items()):
                        outcomes = self._insert(
                            conn, items[0].connector_name, [i.row for i in items], True
                        )
                        results += zip(items, outcomes, strict=True)
                    committing = True
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
        except Exception as exc:
            if len(group) == 1 or committing:
                # A failed COMMIT may have committed all the same (the connection lost before
                # its answer): inserting the tasks again could log them twice. Each caller
                # gets the error (a retry with an idempotency key is safe).
                for item in group:
                    item.error = exc
                return
            for item in group:  # one bad task must not fail its neighbours
                try:
                    item.outcome = self._insert_alone(item.connector_name, item.row)
                except Exception as alone:
                    item.error = alone
            return
        for item, outcome in results:
            item.outcome = outcome

    def _insert_alone(
        self, connector_name: str, row: dict[str, Any], limit: int | None = None
    ) -> LogOutcome:
        """One prepared task in a transaction of its own."""
        try:
            with self.db.connect() as conn:
                if limit is not None:
                    self._within_limit(conn, connector_name, [row], limit)
                outcome = self._insert(conn, connector_name, [row], False)[0]
                conn.commit()
        except _Duplicate as dup:
            outcome = LogOutcome(dup.task_id, created=False)
        if limit is not None and self.on_logged is not None and outcome.created:
            assert outcome.task_id is not None
            self.on_logged(connector_name, outcome.task_id)
        return outcome

    def log_many(self, connector_name: str, requests: list[TaskRequest]) -> list[LogOutcome]:
        """Log several tasks all or nothing: every one is checked and prepared (and may raise)
        before any is written; then all are inserted in one transaction.

        The checks, the inserts and the commit share one connection: on PostgreSQL three
        round trips for a task (checks; lock, insert and NOTIFY; commit). The checks read in
        autocommit mode, outside any transaction, so the connector's code never runs while a
        transaction is open (SQLite's single write lock; a PostgreSQL session idle in a
        transaction); the inserts then begin one (BEGIN IMMEDIATE on SQLite).

        Traced as ``syncbus.log`` (``syncbus.tracing``): each task keeps the trace context
        its processing joins. A call of one task goes through group commit (``log``)."""
        if len(requests) == 1 and self.group is not None:
            return [self.log(connector_name, requests[0])]
        with tracing.log_call(connector_name, [r.traceparent for r in requests]) as trace:
            outcomes = self._log_many(connector_name, _stamped(requests, trace.keep))
            trace.logged(o.task_id for o in outcomes)
        return outcomes

    def _log_many(self, connector_name: str, requests: list[TaskRequest]) -> list[LogOutcome]:
        check_text("connector name", connector_name, NAME_MAX)
        parsed = []
        for i, r in enumerate(requests):  # every argument of every task, before any SQL
            with _naming(i, len(requests)):
                parsed.append(_parse(r))
        try:
            with self.db.connect() as conn:
                outcomes = self._log(conn, connector_name, requests, parsed)
                conn.commit()
        except _Duplicate as dup:  # a concurrent twin won the key: ours was rolled back
            outcomes = [LogOutcome(dup.task_id, created=False)]  # a call of one task only
        if self.on_logged is not None:
            for outcome in outcomes:
                if outcome.created and outcome.task_id is not None:
                    self.on_logged(connector_name, outcome.task_id)
        return outcomes

    def _log(
        self,
        conn: sa.Connection,
        connector_name: str,
        requests: list[TaskRequest],
        parsed: list[_Parsed],
    ) -> list[LogOutcome]:
        dialect = dialect_of(conn)
        dialect.reads_without_transaction(conn, True)
        states: dict[str | None, LogState] = {}  # per site, for tasks without a key
        checked: list[LogState] = []
        prepared: list[LogOutcome | dict[str, Any] | _Repeat] = []
        first_with: dict[str, int] = {}  # an idempotency key: the first task of the call with it
        for i, (r, p) in enumerate(zip(requests, parsed, strict=True)):
            key = r.idempotency_key
            if key is not None and key in first_with:
                # A repeat inside the call is answered as a retry of the call would be: as
                # its first task, neither prepared nor checked again.
                prepared.append(_Repeat(first_with[key]))
                continue
            if key is not None:
                first_with[key] = i
            with _naming(i, len(requests)):
                prepared.append(self._prepare(conn, connector_name, r, p, states, checked))
        conn.rollback()  # ends SQLAlchemy's notional transaction; the database has none open
        dialect.reads_without_transaction(conn, False)
        rows = [p for p in prepared if isinstance(p, dict)]
        # A lone task whose key a twin won raises _Duplicate; in a batch of several it must
        # take a savepoint instead, so that every other task keeps its outcome.
        if rows and checked and checked[0].queue_limit is not None:
            self._within_limit(conn, connector_name, rows, int(checked[0].queue_limit))
        ids = iter(self._insert(conn, connector_name, rows, len(requests) > 1) if rows else [])
        outcomes: list[LogOutcome] = []
        for item in prepared:
            if isinstance(item, _Repeat):
                outcomes.append(LogOutcome(outcomes[item.first].task_id, created=False))
            else:
                outcomes.append(item if isinstance(item, LogOutcome) else next(ids))
        return outcomes

    def _check(
        self, conn: sa.Connection, connector_name: str, site_name: str | None, key: str | None
    ) -> LogState:
        state = enqueue.read_state(conn, _STATE_QUERY, connector_name, site_name, key)
        if state.switched_off is not None:
            key = state.switched_off
            raise IntegrationDisabledError(
                f"{SWITCHED_OFF[key]} (settings.{key}); nothing was logged"
            )
        if state.connector_id is None:
            raise ConnectorNotFoundError(not_registered(conn, connector_name))
        if not state.connector_enabled:
            raise ConnectorDisabledError(
                f"connector {connector_name!r} is disabled; enable it to log tasks"
            )
        if site_name and not state.site_exists:
            raise SiteNotFoundError(
                f"target site {site_name!r} not found; create it with "
                f"bus.create_site({site_name!r}) (the default site is 'main')"
            )
        return state

    def _prepare(
        self,
        conn: sa.Connection,
        connector_name: str,
        req: TaskRequest,
        parsed: _Parsed,
        states: dict[str | None, LogState],
        checked: list[LogState],
    ) -> LogOutcome | dict[str, Any]:
        """The task row to insert, or the outcome when there is nothing to insert."""
        ptype, ttype, dtype = parsed
        key = req.idempotency_key
        state = states.get(req.site_name) if key is None else None
        if state is None:  # a batch checks once per site (and once per idempotency key)
            state = self._check(conn, connector_name, req.site_name, key)
            checked.append(state)
            if key is None:
                states[req.site_name] = state
        if state.existing_task_id is not None:
            return LogOutcome(int(state.existing_task_id), created=False)
        built = self.build(connector_name, req.external_obj, ttype, dtype, req.site_name)
        if built is None:
            return LogOutcome(None, created=False)
        self._require_tables(conn, built)
        return {
            "connector_id": state.connector_id,
            "task_type": ttype.value,
            "process_type": ptype.value,
            "site_name": req.site_name,
            "created_at": utcnow(),
            "idempotency_key": key,
            "error_message": _logged_error(ptype, built["lane"]),
            "traceparent": traceparent(req.traceparent),
            **built,
        }

    def _require_tables(self, conn: sa.Connection, built: dict[str, Any]) -> None:
        """Refuse a task whose type's table does not exist (a type registered, but
        ``create_schema`` never run against this database): it could never be applied, and
        would stop its queue. Each table is looked up once per process."""
        name, class_name = built["object_type"], built["class_name"]
        if name is not None:
            table: sa.Table | None = self.registry.table(name)
            what = f"object type {name!r}"
        else:
            table, what = self.registry.page_table(class_name), f"page type {class_name!r}"
        if table is None or table.name in self._tables_seen:
            return
        if not sa.inspect(conn).has_table(table.name):
            raise SchemaMissingError(
                f"the table {table.name!r} of {what} does not exist in this database: call "
                "bus.create_schema() (or run the program that registers the type and creates "
                "the schema) before logging its tasks; nothing was logged"
            )
        self._tables_seen.add(table.name)

    def build(
        self,
        connector_name: str,
        external_obj: Any,
        ttype: TaskType,
        dtype: TaskDataType,
        site_name: str | None,
    ) -> dict[str, Any] | None:
        """What a task stores of its external object: the connector's internal object with
        its translation records (``data``), its title, type and lane, and the external
        object itself; None when the connector skipped it. (Logging, and edit and replay.)"""
        connector = self.connectors.get(connector_name)
        prepared = connector.prepare_internal_object(external_obj, ttype, dtype, site_name)
        if prepared is None:
            return None
        payload, object_type, class_name, title, dtype = self._build(
            connector_name, prepared, ttype, dtype, site_name
        )
        if dtype is not TaskDataType.SIMPLE:
            payload.records = self._capture(connector, payload)
            title = self._binding_title(ttype, payload, site_name) or title
        lane = None
        children: list[str] = []
        if connector.ordering == Ordering.ENTITY:  # CONNECTOR pays one comparison
            types = self.registry.object_type
            lane = lane_of(payload, site_name, types)
            if dtype is TaskDataType.SNAPSHOT and payload.obj is not None and payload.obj.children:
                children = sorted(child_lanes(payload, site_name, types) - {lane})
        built: dict[str, Any] = {
            "data_type": dtype.value,
            "object_type": object_type,
            "class_name": class_name,
            "title": title,
            "data": _encode(payload),
            "lane": lane,
            "external": external_json(external_obj),
        }
        if children:  # not a column: the lanes its children are in (``CHILD_LANES``)
            built[CHILD_LANES] = children
        return built

    def _binding_title(
        self, ttype: TaskType, payload: Payload, site_name: str | None
    ) -> str | None:
        """A translated binding's title names its ends by the identities their translation
        records give (``Create cms.userrole (cms.role/admin@main,cms.user/alice)``): the ids
        its columns hold are the external system's, which an operator would take for internal
        ones. None for anything else."""
        obj = payload.obj
        if obj is None or not payload.records:
            return None
        types = self.registry.object_type
        try:
            ot = types(obj.object_type)
            if ot.key_column is not None:
                return None
            ends = binding_identity(obj, site_name, payload, types)
        except (SyncBusError, KeyError, TypeError, ValueError):
            return None
        return f"{ttype.spec.verb} {ot.name} {ends}"[:450]

    def _capture(self, connector: BaseIntegrationConnector, payload: Payload) -> list[Any]:
        """The translation records of a task (SimpleSnapshot and Snapshot)."""
        capture = Capture(connector, self.registry)
        if payload.obj is not None:
            capture.capture_object_tree(payload.obj)
        elif payload.page is not None and payload.page.parent_id is not None:
            page = payload.page
            capture.page_ref(page.parent_id, page.class_name, f"the parent of '{page.name}'")
        return capture.records

    def _build(
        self,
        connector_name: str,
        prepared: Any,
        ttype: TaskType,
        dtype: TaskDataType,
        site_name: str | None,
    ) -> tuple[Payload, str | None, str | None, str, TaskDataType]:
        typ = check_prepared(self.registry, connector_name, prepared, ttype, dtype, site_name)
        if isinstance(typ, ObjectType):
            if dtype is not TaskDataType.SNAPSHOT and prepared.children:
                prepared = InternalObject(prepared.object_type, prepared.data)
            title = object_title(ttype, typ, prepared.data)
            return Payload(obj=prepared), typ.name, None, title, dtype
        if dtype is TaskDataType.SNAPSHOT:  # Snapshot is not defined for pages
            dtype = TaskDataType.SIMPLE_SNAPSHOT
        if (culture := canonical_culture(prepared.culture)) != prepared.culture:
            prepared = replace(prepared, culture=culture)  # en-us is en-US
        return Payload(page=prepared), None, typ.class_name, page_title(ttype, prepared), dtype

    def _within_limit(
        self, conn: sa.Connection, connector_name: str, rows: list[dict[str, Any]], limit: int
    ) -> None:
        """Backpressure (CONTRACT §9): refuse the whole call when the queue would pass the
        connector's limit. Checked under the connector's logging lock, so concurrent loggers
        cannot overshoot it together; connectors without a limit never come here."""
        if len(rows) > limit:
            raise ConfigurationError(
                f"a batch of {len(rows)} tasks can never fit connector {connector_name!r}'s "
                f"queue limit of {limit}: send it in smaller batches"
            )
        connector_id = rows[0]["connector_id"]
        enqueue.take_logging_lock(conn, connector_id)
        if not enqueue.queued_at_least(conn, connector_id, limit - len(rows) + 1):
            return
        # Room for this call once the workers have drained what it brings (the queue is at
        # least at the limit, less what the call needs: no count of a long queue here).
        rate = leases.last_run_rate(conn, connector_id)
        retry_after = 2.0 if not rate else min(max(len(rows) / rate, 1.0), 300.0)
        stuck = self._stuck(conn, connector_name, connector_id)
        conn.rollback()
        self.hooks.tasks_rejected(connector_name, len(rows))
        if stuck:  # it will not drain by itself: no point asking again every 2 s
            retry_after = max(retry_after, _STUCK_RETRY_AFTER)
        raise QueueFullError(
            (
                f"connector {connector_name!r}: {len(rows)} more tasks would pass its limit of "
                f"{limit} queued tasks"
                if len(rows) > 1
                else f"connector {connector_name!r} has reached its limit of {limit} queued tasks"
            )
            + f": nothing was logged; {stuck}try again in {retry_after:.0f} s"
            + ("" if rate or stuck else " (a guess: no run of it has drained tasks yet)"),
            retry_after,
        )

    def _stuck(self, conn: sa.Connection, connector_name: str, connector_id: int) -> str:
        """Why a full queue will not drain until an operator acts ('' when it drains):
        processing is switched off, or, under CONNECTOR ordering, a task stopped as ``Error``
        is at its head."""
        key = switches.off_switch(conn, switches.PROCESSING)
        if key is not None:
            return (
                f"{switches.SWITCHED_OFF[key]} (settings.{key}), so its queue will not drain "
                "until it is switched on; "
            )
        try:
            entity = self.connectors.get(connector_name).ordering == Ordering.ENTITY
        except SyncBusError:  # it cannot be loaded here: its queue may be stopped all the same
            entity = False
        first = None if entity else tasks.head(conn, connector_id)
        if first is None or first.process_type != ProcessType.ERROR.value:
            return ""
        return (
            f"its queue is stopped at task {first.task_id} (Error) and will not drain until an "
            "operator fixes, synchronizes or deletes that task; "
        )

    @staticmethod
    def _insert(
        conn: sa.Connection, connector_name: str, rows: list[dict[str, Any]], batch: bool
    ) -> list[LogOutcome]:
        """Insert tasks in the connection's transaction. A task whose idempotency key is taken
        (earlier, in this batch, or by a concurrent twin in another process) yields the first
        task's id instead. Workers are notified (where the backend can), on commit."""
        children = [(i, v[CHILD_LANES]) for i, v in enumerate(rows) if CHILD_LANES in v]
        if children:  # not a column of the task row: inserted once the ids are known
            rows = [without_child_lanes(v) for v in rows]
        outcomes = Intake._insert_rows(conn, connector_name, rows, batch)
        if children:
            enqueue.insert_child_lanes(
                conn,
                [
                    (task_id, lanes)
                    for i, lanes in children
                    if (task_id := outcomes[i].task_id) is not None and outcomes[i].created
                ],
            )
        return outcomes

    @staticmethod
    def _insert_rows(
        conn: sa.Connection, connector_name: str, rows: list[dict[str, Any]], batch: bool
    ) -> list[LogOutcome]:
        if len(rows) > 1 and all(v["idempotency_key"] is None for v in rows):
            ids = enqueue.insert_tasks(conn, connector_name, rows)
            return [LogOutcome(task_id, created=True) for task_id in ids]
        outcomes = []
        locked = False
        if batch and any(v["idempotency_key"] is not None for v in rows):
            # Keyed tasks of a batch go in SAVEPOINTs: lock first, outside them, or a task
            # whose key a twin won would release the lock with its rollback.
            enqueue.take_logging_lock(conn, rows[0]["connector_id"])
            locked = True
        for values in rows:
            keyed = values["idempotency_key"] is not None
            nested = conn.begin_nested() if batch and keyed else None
            task_id = enqueue.insert_task(
                conn, connector_name, values, notify=not keyed, locked=locked
            )
            locked = True
            first = enqueue.claim_key(conn, values, task_id) if keyed else None
            if first is None:
                outcomes.append(LogOutcome(task_id, created=True))
                if nested is not None:
                    nested.commit()
                if keyed:
                    enqueue.notify_logged(conn, connector_name)
                continue
            if nested is None:
                raise _Duplicate(first)  # rolls back this task's insert
            nested.rollback()
            outcomes.append(LogOutcome(first, created=False))
        return outcomes


# The key of a built task row that holds, under Ordering.ENTITY, the lanes a SNAPSHOT task
# writes through its children (besides its own): not a column of the row, stored beside it.
CHILD_LANES = "child_lanes"


def without_child_lanes(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != CHILD_LANES}


@dataclass(frozen=True, slots=True)
class _Repeat:
    """A task of a call whose idempotency key an earlier task of the call has."""

    first: int  # that task's place in the call


class _Waiting:
    """One caller's prepared task in a group, and its outcome once the group committed."""

    __slots__ = ("connector_name", "error", "outcome", "row")

    def __init__(self, connector_name: str, row: dict[str, Any]) -> None:
        self.connector_name = connector_name
        self.row = row
        self.outcome: LogOutcome | None = None
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not None or self.error is not None


class _Group:
    """Group commit for single-task logging calls (HTTP requests, threads).

    A caller adds its prepared task and, if no insert is under way, leads: it inserts every
    task waiting at that moment in one transaction and commits once. Callers that arrive
    while a commit is under way wait for it and then the next leader takes them all, so the
    group grows with the load and a lone caller never waits for company. The tasks of a
    group are inserted connector by connector in order of arrival, under each connector's
    logging lock (taken in connector id order: two groups never deadlock), so the
    per-connector id order and idempotency keys behave exactly as for calls one by one.
    Should the group's transaction fail, each of its tasks is inserted alone, so one bad task
    fails its own call and no other."""

    def __init__(self, intake: Intake, limit: int = 500) -> None:
        self.intake = intake
        self.limit = limit
        self._cond = threading.Condition()
        self._queue: list[_Waiting] = []
        self._leading = False

    def submit(self, connector_name: str, row: dict[str, Any]) -> LogOutcome:
        me = _Waiting(connector_name, row)
        with self._cond:
            self._queue.append(me)
            while self._leading and not me.done:
                self._cond.wait()
            if not me.done:
                self._leading = True
                group, self._queue = self._queue[: self.limit], self._queue[self.limit :]
        if not me.done:
            try:
                self.intake.insert_together(group)
            finally:
                with self._cond:
                    for item in group:  # never leave a caller waiting (an interrupt, say)
                        if not item.done:
                            item.error = RuntimeError("the logging group was interrupted")
                    self._leading = False
                    self._cond.notify_all()
        if me.error is not None:
            raise me.error
        assert me.outcome is not None
        return me.outcome


def _stamped(requests: list[TaskRequest], keep: list[str | None]) -> list[TaskRequest]:
    """The requests with the trace context each task keeps (``tracing.log_call``)."""
    pairs = zip(requests, keep, strict=True)
    return [r if tp == r.traceparent else replace(r, traceparent=tp) for r, tp in pairs]


class _Duplicate(Exception):
    """Raised inside the insert transaction to roll it back when a twin won the key."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id


@dataclass(frozen=True)
class TaskRequest:
    """One task to log, as ``process_external_task`` takes it."""

    external_obj: Any
    process_type: ProcessType | str = ProcessType.DEFAULT
    task_type: TaskType | str = TaskType.CREATE_OBJECT
    data_type: TaskDataType | str = TaskDataType.SIMPLE
    site_name: str | None = None
    idempotency_key: str | None = None
    # The producer's W3C trace context (``traceparent`` header): processing joins its trace.
    traceparent: str | None = None


@dataclass(frozen=True)
class LogOutcome:
    """What logging one task did: its id (None if the connector skipped it), and whether it
    is new (False for a repeated idempotency key)."""

    task_id: int | None
    created: bool
