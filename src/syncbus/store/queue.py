"""Shared helpers on the bus's own tables, not the task queue's SQL (most of that is still
written where it is used: intake, engine, bus, readmodel, dispatcher, the admin's jobs).

Here: the clock (``utcnow``, ``as_utc``); insert-or-ignore and upsert on either dialect; the
switches (``flag``, settings rows) and the PostgreSQL notify channel; the event log and a
task's sync log (``record_task_error``); the task query with connector name and running
state (``task_joined``); and the per-connector leases.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from syncbus.enums import ProcessType
from syncbus.store.db import db_now_epoch
from syncbus.store.schema import (
    connector_table,
    event_log_table,
    lease_table,
    setting_table,
    sync_log_table,
    task_table,
)

# PostgreSQL: logging a task NOTIFYs this channel (payload: the connector's name); the
# dispatcher LISTENs on it to wake up.
NOTIFY_CHANNEL = "syncbus_tasks"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; every time syncbus reports is aware UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def insert_ignore(conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on either dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(table).values(values).on_conflict_do_nothing())


def upsert(conn: sa.Connection, table: sa.Table, values: dict[str, Any], keys: list[str]) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(values)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=keys,
            set_={k: stmt.excluded[k] for k in values if k not in keys},
        )
    )


# -- settings ---------------------------------------------------------------------------------
def flag(value: str | None) -> bool:
    """A boolean setting; a missing row means on."""
    return value is None or value.lower() in ("1", "true", "yes", "on")


def read_setting(conn: sa.Connection, key: str) -> str | None:
    value = conn.execute(
        sa.select(setting_table.c.value).where(setting_table.c.key == key)
    ).scalar()
    return None if value is None else str(value)


def write_setting(conn: sa.Connection, key: str, value: str) -> None:
    upsert(conn, setting_table, {"key": key, "value": value}, ["key"])


def setting_expr(key: str) -> sa.ScalarSelect[Any]:
    return sa.select(setting_table.c.value).where(setting_table.c.key == key).scalar_subquery()


# -- logs -------------------------------------------------------------------------------------
def write_event(
    conn: sa.Connection, source: str, code: str, message: str, event_type: str = "E"
) -> None:
    conn.execute(
        event_log_table.insert().values(
            time=utcnow(), source=source, code=code, message=message, event_type=event_type
        )
    )


def record_task_error(
    conn: sa.Connection,
    task_id: int,
    message: str,
    *,
    set_error_state: bool,
    collapse_repeats: bool = False,
) -> None:
    """Append to the task's sync log and copy the error onto the task (ERROR if it was DEFAULT).

    With ``collapse_repeats`` (automatic retries) the same error of the same task within a
    second is written once: a task retried on every trigger must not flood its log with
    identical entries. An operator's attempt is always written."""
    now = utcnow()
    t = sync_log_table
    last = (
        None
        if not collapse_repeats
        else conn.execute(
            sa.select(t.c.time, t.c.error_message)
            .where(t.c.task_id == task_id)
            .order_by(t.c.log_id.desc())
            .limit(1)
        ).first()
    )
    last_time = as_utc(last.time) if last is not None else None
    repeated = (
        collapse_repeats
        and last is not None
        and last.error_message == message
        and last_time is not None
        and (now - last_time).total_seconds() < 1.0
    )
    if not repeated:
        conn.execute(t.insert().values(task_id=task_id, time=now, error_message=message))
    values: dict[str, Any] = {"error_message": message, "last_run_at": now}
    if set_error_state:
        values["process_type"] = ProcessType.ERROR.value
    conn.execute(task_table.update().where(task_table.c.task_id == task_id).values(values))


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


# -- leases -----------------------------------------------------------------------------------
def ensure_lease_row(conn: sa.Connection, connector_id: int) -> None:
    insert_ignore(conn, lease_table, {"connector_id": connector_id})


def acquire_lease(conn: sa.Connection, connector_id: int, owner: str, seconds: float) -> bool:
    """Take the connector's lease if it is free or expired: one atomic UPDATE."""
    now = db_now_epoch(conn.dialect.name)
    t = lease_table
    result = conn.execute(
        t.update()
        .where(
            t.c.connector_id == connector_id,
            sa.or_(t.c.owner.is_(None), t.c.expires_at.is_(None), t.c.expires_at < now),
        )
        .values(
            owner=owner,
            expires_at=now + seconds,
            run_first_task_id=None,
            run_last_task_id=None,
            last_run_started_at=utcnow(),
        )
    )
    return result.rowcount == 1


def renew_lease(
    conn: sa.Connection,
    connector_id: int,
    owner: str,
    seconds: float,
    **values: Any,
) -> bool:
    """Extend the lease (and record the batch in hand); False when it was lost."""
    now = db_now_epoch(conn.dialect.name)
    t = lease_table
    result = conn.execute(
        t.update()
        .where(t.c.connector_id == connector_id, t.c.owner == owner)
        .values(expires_at=now + seconds, **values)
    )
    return result.rowcount == 1


def release_lease(conn: sa.Connection, connector_id: int, owner: str, **last_run: Any) -> None:
    t = lease_table
    conn.execute(
        t.update()
        .where(t.c.connector_id == connector_id, t.c.owner == owner)
        .values(
            owner=None,
            expires_at=None,
            run_first_task_id=None,
            run_last_task_id=None,
            last_run_finished_at=utcnow(),
            **last_run,
        )
    )
