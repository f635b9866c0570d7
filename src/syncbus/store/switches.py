"""The switches: settings rows (a missing row means on), reading them as flags, and the one
rule of which switch stops what: the master switch stops everything; under it,
``log_external`` stops logging incoming tasks and ``process_external`` processing them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from syncbus.store.dialect import dialect_of
from syncbus.store.tables import connector_table, setting_table

MASTER = "integration_enabled"
LOGGING = "log_external"
PROCESSING = "process_external"
# What it means when a switch is off (callers add their own ending: "; nothing was logged").
SWITCHED_OFF = {
    MASTER: "the integration bus is switched off",
    LOGGING: "logging of incoming tasks is switched off",
    PROCESSING: "processing of incoming tasks is switched off",
}


# Retentions (CONTRACT §10), in days; a missing row means the default, 0 keeps nothing.
HISTORY_RETENTION = "history_retention_days"
IDEMPOTENCY_RETENTION = "idempotency_retention_days"
MAX_DAYS = 36_500  # a hundred years: longer is "forever" for any database


def days(value: str | None, default: int) -> int:
    """A retention setting in days; a missing or unreadable row means the default."""
    try:
        return default if value is None else min(max(int(value), 0), MAX_DAYS)
    except ValueError:
        return default


def keeps_history(conn: sa.Connection) -> bool:
    """Whether finished tasks leave a record (``history_retention_days`` above 0)."""
    return days(read_setting(conn, HISTORY_RETENTION), 7) > 0


def flag(value: str | None) -> bool:
    """A boolean setting; a missing row means on."""
    return value is None or value.lower() in ("1", "true", "yes", "on")


def read_setting(conn: sa.Connection, key: str) -> str | None:
    value = conn.execute(
        sa.select(setting_table.c.value).where(setting_table.c.key == key)
    ).scalar()
    return None if value is None else str(value)


def read_settings(conn: sa.Connection, keys: tuple[str, ...]) -> dict[str, str]:
    t = setting_table
    return {
        str(k): str(v)
        for k, v in conn.execute(sa.select(t.c.key, t.c.value).where(t.c.key.in_(keys)))
    }


def write_setting(conn: sa.Connection, key: str, value: str) -> None:
    dialect_of(conn).upsert(conn, setting_table, {"key": key, "value": value}, ["key"])


def setting_expr(key: str) -> sa.ScalarSelect[Any]:
    return sa.select(setting_table.c.value).where(setting_table.c.key == key).scalar_subquery()


def probe_write(conn: sa.Connection, wait_ms: int) -> None:
    """Try a write now and undo it: a settings row of its own, inserted in a transaction whose
    statements wait ``wait_ms`` for locks at most, then rolled back. Raises what the database
    raised. (SQLite's wait for the write lock at BEGIN is the engine's ``BUSY_TIMEOUT``.)"""
    # A key of its own per probe: two probes at once never wait on each other's row.
    probe = {"key": f"syncbus.readyz.{uuid.uuid4().hex}", "value": ""}
    trans = conn.begin()  # SQLite: BEGIN IMMEDIATE, i.e. the write lock, or a wait for it
    try:
        dialect = dialect_of(conn)
        dialect.bound_lock_wait(conn, wait_ms)
        dialect.bound_statement_time(conn, wait_ms + 500)
        conn.execute(setting_table.insert().values(probe))
    finally:
        trans.rollback()


def first_off(values: Mapping[str, str | None], switch: str) -> str | None:
    """Which switch stops ``switch``'s work (``LOGGING`` or ``PROCESSING``): the master switch
    if it is off, else ``switch`` if it is off, else None. ``values`` are the settings' stored
    values (a missing one means on), as ``read_settings`` or a query's columns give them."""
    for key in (MASTER, switch):
        if not flag(values.get(key)):
            return key
    return None


def off_switch(conn: sa.Connection, switch: str) -> str | None:
    """``first_off`` on the stored settings (one query)."""
    return first_off(read_settings(conn, (MASTER, switch)), switch)


def why_not_processing(conn: sa.Connection) -> str | None:
    """Why no incoming task may be processed now (a switch is off), or None."""
    key = off_switch(conn, PROCESSING)
    return None if key is None else SWITCHED_OFF[key]


# Before each batch: the two switches and the connector's own flag, in one statement.
_RUN_CHECK = sa.select(
    setting_expr(MASTER).label("master"),
    setting_expr(PROCESSING).label("processing"),
    sa.select(connector_table.c.enabled)
    .where(connector_table.c.connector_id == sa.bindparam("cid"))
    .scalar_subquery()
    .label("enabled"),
)


def why_run_ends(conn: sa.Connection, connector_id: int) -> str | None:
    """Why a run of the connector must not take another batch (a switch is off, the
    connector was disabled or removed), or None; one query."""
    row = conn.execute(_RUN_CHECK, {"cid": connector_id}).one()
    key = first_off({MASTER: row.master, PROCESSING: row.processing}, PROCESSING)
    if key is not None:
        return SWITCHED_OFF[key]
    if row.enabled is None:
        return "the connector was removed"
    return None if row.enabled else "the connector was disabled"


def why_not_logging(conn: sa.Connection) -> str | None:
    """Why no incoming task may be logged now (a switch is off), or None."""
    key = off_switch(conn, LOGGING)
    return None if key is None else SWITCHED_OFF[key]
