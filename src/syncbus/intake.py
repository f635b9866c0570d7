"""Logging incoming tasks: prepare, capture translation records, serialize, enqueue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from syncbus.connectors import ConnectorRegistry
from syncbus.content.registry import TypeRegistry
from syncbus.content.tables import BUILTIN_TABLES
from syncbus.content.types import ObjectType
from syncbus.content.validation import check_prepared, check_text
from syncbus.enums import ProcessType, TaskDataType, TaskType
from syncbus.errors import (
    ConnectorDisabledError,
    ConnectorNotFoundError,
    IntegrationDisabledError,
    InvalidObjectError,
    SiteNotFoundError,
)
from syncbus.model import InternalObject, Page
from syncbus.payload import Payload, encode
from syncbus.store.db import AUTOCOMMIT_READS, utcnow
from syncbus.store.dialect import NOTIFY_CHANNEL
from syncbus.store.switches import flag, setting_expr
from syncbus.store.tables import connector_table as ct
from syncbus.store.tables import idempotency_table as keys
from syncbus.store.tables import task_table
from syncbus.translation import Capture

_site = BUILTIN_TABLES["cms.site"]
_LOG_LOCK = 0x5342  # advisory lock class for logging, keyed by connector id


def _state_query() -> sa.Select[Any]:
    """One round trip for every check a logging call makes (built once, bound per call)."""
    name = sa.bindparam("name", type_=sa.String())
    site = sa.bindparam("site", type_=sa.String())
    key = sa.bindparam("key", type_=sa.String())
    cid = sa.select(ct.c.connector_id).where(ct.c.connector_name == name).scalar_subquery()
    return sa.select(
        setting_expr("integration_enabled").label("ie"),
        setting_expr("log_external").label("le"),
        cid.label("cid"),
        sa.select(ct.c.enabled).where(ct.c.connector_name == name).scalar_subquery().label("cen"),
        sa.select(_site.c.site_id).where(_site.c.site_name == site).scalar_subquery().label("sid"),
        sa.select(keys.c.task_id)
        .where(keys.c.connector_id == cid, keys.c.idempotency_key == key)
        .scalar_subquery()
        .label("existing"),
    )


_STATE_QUERY = _state_query()

# A task logged as Error stops its connector before it ever ran (CONTRACT §4): the reason is
# on the task from the start, so the dashboard, the banner and the run's result say why.
LOGGED_AS_ERROR = (
    "logged with process type Error: the connector stops at this task until it is "
    "synchronized or deleted"
)

_TASK_COLUMNS = (
    "connector_id",
    "task_type",
    "data_type",
    "process_type",
    "object_type",
    "class_name",
    "title",
    "site_name",
    "created_at",
    "data",
    "idempotency_key",
    "error_message",
)
_INSERT_TASK = task_table.insert().returning(task_table.c.task_id)
_INSERT_TASKS = task_table.insert().returning(task_table.c.task_id, sort_by_parameter_order=True)

# PostgreSQL: ids come from a sequence at INSERT but become visible at COMMIT, so two
# concurrent loggers could commit out of id order, and a run could pass a lower id before it
# is visible. A connector's inserts are serialised until commit by a transaction-scoped
# advisory lock (released when the transaction ends), which keeps ids in commit order.
_PG_LOCK = sa.select(
    sa.func.pg_advisory_xact_lock(_LOG_LOCK, sa.bindparam("connector_id", type_=sa.Integer()))
)


def _pg_insert_notify() -> Any:
    """Lock, insert and NOTIFY in one statement. The row is selected FROM the lock, so the
    lock is held before the INSERT draws the task id from its sequence."""
    lock = sa.select(
        sa.func.pg_advisory_xact_lock(
            _LOG_LOCK, sa.bindparam("connector_id", type_=sa.Integer())
        ).label("locked")
    ).cte("lock")
    row = sa.select(
        *(sa.bindparam(c, type_=task_table.c[c].type).label(c) for c in _TASK_COLUMNS)
    ).select_from(lock)
    ins = (
        task_table.insert()
        .from_select(list(_TASK_COLUMNS), row)
        .returning(task_table.c.task_id)
        .cte("ins")
    )
    notify = sa.func.pg_notify(
        sa.bindparam("channel", type_=sa.String()),
        sa.bindparam("connector_name", type_=sa.String()),
    )
    return sa.select(ins.c.task_id, notify).select_from(ins)


_PG_INSERT_NOTIFY = _pg_insert_notify()
_PG_NOTIFY = sa.select(
    sa.func.pg_notify(
        sa.bindparam("channel", type_=sa.String()), sa.bindparam("name", type_=sa.String())
    )
)


# Lengths of the columns the logging call writes or compares, read from the schema.
def _length(column: sa.Column[Any]) -> int:
    assert isinstance(column.type, sa.String) and column.type.length
    return column.type.length


_NAME_MAX = _length(ct.c.connector_name)
_SITE_MAX = _length(task_table.c.site_name)
_KEY_MAX = _length(keys.c.idempotency_key)


_Parsed = tuple[ProcessType, TaskType, TaskDataType]


def _parse(req: TaskRequest) -> _Parsed:
    """The task's enumerations; refuses what no task could be logged with."""
    ptype = ProcessType.parse(req.process_type)
    key = req.idempotency_key
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise InvalidObjectError("idempotency_key must be a non-empty string")
    if key is not None:
        check_text("idempotency_key", key, _KEY_MAX)
    if req.site_name is not None:
        check_text("site_name", req.site_name, _SITE_MAX)
    return ptype, TaskType.parse(req.task_type), TaskDataType.parse(req.data_type)


def _encode(payload: Payload) -> str:
    try:
        return encode(payload)
    except (TypeError, ValueError, RecursionError) as exc:  # a value JSON cannot carry
        raise InvalidObjectError(f"the prepared object cannot be stored: {exc}") from None


@dataclass(frozen=True)
class _State:
    integration_enabled: bool
    log_external: bool
    connector_id: int | None
    connector_enabled: bool
    site_exists: bool
    existing_task_id: int | None


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
    ) -> None:
        self.db = db
        self.registry = registry
        self.connectors = connectors
        self.on_logged = on_logged

    def _state(
        self, conn: sa.Connection, connector_name: str, site_name: str | None, key: str | None
    ) -> _State:
        row = conn.execute(
            _STATE_QUERY, {"name": connector_name, "site": site_name, "key": key}
        ).one()
        return _State(
            integration_enabled=flag(row.ie),
            log_external=flag(row.le),
            connector_id=row.cid,
            connector_enabled=bool(row.cen),
            site_exists=row.sid is not None,
            existing_task_id=row.existing,
        )

    def log(
        self,
        connector_name: str,
        external_obj: Any,
        *,
        process_type: ProcessType | str = ProcessType.DEFAULT,
        task_type: TaskType | str = TaskType.CREATE_OBJECT,
        data_type: TaskDataType | str = TaskDataType.SIMPLE,
        site_name: str | None = None,
        idempotency_key: str | None = None,
    ) -> LogOutcome:
        request = TaskRequest(
            external_obj, process_type, task_type, data_type, site_name, idempotency_key
        )
        return self.log_many(connector_name, [request])[0]

    def log_many(self, connector_name: str, requests: list[TaskRequest]) -> list[LogOutcome]:
        """Log several tasks all or nothing: every one is checked and prepared (and may raise)
        before any is written; then all are inserted in one transaction.

        The checks, the inserts and the commit share one connection: on PostgreSQL three
        round trips for a task (checks; lock, insert and NOTIFY; commit). The checks read in
        autocommit mode, outside any transaction, so the connector's code never runs while a
        transaction is open (SQLite's single write lock; a PostgreSQL session idle in a
        transaction); the inserts then begin one (BEGIN IMMEDIATE on SQLite)."""
        check_text("connector name", connector_name, _NAME_MAX)
        parsed = [_parse(r) for r in requests]  # every argument of every task, before any SQL
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
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:  # single-statement reads, no BEGIN (see store.db)
            conn.execution_options(**{AUTOCOMMIT_READS: True})
        else:
            conn.execution_options(isolation_level="AUTOCOMMIT")
        states: dict[str | None, _State] = {}  # per site, for tasks without a key
        prepared = [
            self._prepare(conn, connector_name, r, p, states)
            for r, p in zip(requests, parsed, strict=True)
        ]
        conn.rollback()  # ends SQLAlchemy's notional transaction; the database has none open
        if sqlite:
            conn.execution_options(**{AUTOCOMMIT_READS: False})
        else:
            conn.execution_options(isolation_level=conn.default_isolation_level)
        rows = [p for p in prepared if isinstance(p, dict)]
        # A lone task whose key a twin won raises _Duplicate; in a batch of several it must
        # take a savepoint instead, so that every other task keeps its outcome.
        ids = iter(self._insert(conn, connector_name, rows, len(requests) > 1) if rows else [])
        return [p if isinstance(p, LogOutcome) else next(ids) for p in prepared]

    def _check(
        self, conn: sa.Connection, connector_name: str, site_name: str | None, key: str | None
    ) -> _State:
        state = self._state(conn, connector_name, site_name, key)
        if not state.integration_enabled:
            raise IntegrationDisabledError(
                "the integration bus is switched off (settings.integration_enabled); "
                "nothing was logged"
            )
        if not state.log_external:
            raise IntegrationDisabledError(
                "logging of incoming tasks is switched off (settings.log_external); "
                "nothing was logged"
            )
        if state.connector_id is None:
            raise ConnectorNotFoundError(f"no connector named {connector_name!r} is registered")
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
        states: dict[str | None, _State],
    ) -> LogOutcome | dict[str, Any]:
        """The task row to insert, or the outcome when there is nothing to insert."""
        ptype, ttype, dtype = parsed
        key = req.idempotency_key
        state = states.get(req.site_name) if key is None else None
        if state is None:  # a batch checks once per site (and once per idempotency key)
            state = self._check(conn, connector_name, req.site_name, key)
            if key is None:
                states[req.site_name] = state
        if state.existing_task_id is not None:
            return LogOutcome(int(state.existing_task_id), created=False)
        connector = self.connectors.get(connector_name)
        prepared = connector.prepare_internal_object(req.external_obj, ttype, dtype, req.site_name)
        if prepared is None:
            return LogOutcome(None, created=False)
        payload, object_type, class_name, title, dtype = self._build(
            connector_name, prepared, ttype, dtype, req.site_name
        )
        if dtype is not TaskDataType.SIMPLE:
            capture = Capture(connector, self.registry)
            if payload.obj is not None:
                capture.capture_object_tree(payload.obj)
            elif payload.page is not None and payload.page.parent_id is not None:
                page = payload.page
                capture.page_ref(page.parent_id, page.class_name, f"the parent of '{page.name}'")
            payload.records = capture.records
        return {
            "connector_id": state.connector_id,
            "task_type": ttype.value,
            "data_type": dtype.value,
            "process_type": ptype.value,
            "object_type": object_type,
            "class_name": class_name,
            "title": title,
            "site_name": req.site_name,
            "created_at": utcnow(),
            "data": _encode(payload),
            "idempotency_key": key,
            "error_message": LOGGED_AS_ERROR if ptype is ProcessType.ERROR else None,
        }

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
        return Payload(page=prepared), None, typ.class_name, page_title(ttype, prepared), dtype

    def _insert(
        self, conn: sa.Connection, connector_name: str, rows: list[dict[str, Any]], batch: bool
    ) -> list[LogOutcome]:
        """Insert tasks in the connection's transaction. A task whose idempotency key is taken
        (earlier, in this batch, or by a concurrent twin in another process) yields the first
        task's id instead: the key's primary key serialises the twins. On PostgreSQL the
        insert also NOTIFYs every listening worker, delivered on commit."""
        pg = conn.dialect.name == "postgresql"
        if len(rows) > 1 and all(v["idempotency_key"] is None for v in rows):
            # A batch without keys: one multi-row INSERT, ids returned in the rows' order.
            if pg:
                conn.execute(_PG_LOCK, {"connector_id": rows[0]["connector_id"]})
                ids = conn.execute(_INSERT_TASKS, rows).scalars().all()
            else:
                # SQLAlchemy inserts row by row on SQLite when asked to keep the order of
                # RETURNING (SQLite leaves that order unspecified). One multi-row INSERT is
                # enough: under the write lock this transaction holds, AUTOINCREMENT gives the
                # rows ascending ids in the order of their VALUES, so sorting restores it.
                ids = sorted(conn.execute(_INSERT_TASK, rows).scalars().all())
            if pg:
                conn.execute(_PG_NOTIFY, {"channel": NOTIFY_CHANNEL, "name": connector_name})
            return [LogOutcome(int(task_id), created=True) for task_id in ids]
        outcomes = []
        locked = False
        for values in rows:
            keyed = values["idempotency_key"] is not None
            nested = conn.begin_nested() if batch and keyed else None
            params = values
            if pg and not keyed:
                # One round trip: take the connector's logging lock, insert, NOTIFY.
                stmt: Any = _PG_INSERT_NOTIFY
                params = {**values, "channel": NOTIFY_CHANNEL, "connector_name": connector_name}
                locked = True
            else:
                if pg and not locked:
                    conn.execute(_PG_LOCK, {"connector_id": values["connector_id"]})
                    locked = True
                stmt = _INSERT_TASK
            task_id = int(conn.execute(stmt, params).scalar_one())
            first = self._claim_key(conn, values, task_id) if keyed else None
            if first is None:
                outcomes.append(LogOutcome(task_id, created=True))
                if nested is not None:
                    nested.commit()
                if pg and keyed:
                    conn.execute(_PG_NOTIFY, {"channel": NOTIFY_CHANNEL, "name": connector_name})
                continue
            if nested is None:
                raise _Duplicate(first)  # rolls back this task's insert
            nested.rollback()
            outcomes.append(LogOutcome(first, created=False))
        return outcomes

    @staticmethod
    def _claim_key(conn: sa.Connection, values: dict[str, Any], task_id: int) -> int | None:
        """Record the task's idempotency key; the first task's id when the key was taken."""
        key = values["idempotency_key"]
        if key is None:
            return None
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        claimed = conn.execute(
            dialect.insert(keys)
            .values(
                connector_id=values["connector_id"],
                idempotency_key=key,
                task_id=task_id,
                created_at=values["created_at"],
            )
            .on_conflict_do_nothing()
            .returning(keys.c.task_id)
        ).scalar()
        if claimed is not None:
            return None
        return int(
            conn.execute(
                sa.select(keys.c.task_id).where(
                    keys.c.connector_id == values["connector_id"],
                    keys.c.idempotency_key == key,
                )
            ).scalar_one()
        )


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


@dataclass(frozen=True)
class LogOutcome:
    """What logging one task did: its id (None if the connector skipped it), and whether it
    is new (False for a repeated idempotency key)."""

    task_id: int | None
    created: bool
