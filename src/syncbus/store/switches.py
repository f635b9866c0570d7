"""The switches: settings rows (a missing row means on) and reading them as flags."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from syncbus.store.dialect import dialect_of
from syncbus.store.tables import setting_table


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
