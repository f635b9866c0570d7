"""Readiness: can the database be written right now? A tiny insert in a transaction that is
rolled back, with short lock timeouts, plus (SQLite) the free space of the database's disk,
since a rolled-back write never reaches the disk."""

from __future__ import annotations

import asyncio
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from syncbus.bus import IntegrationBus
from syncbus.store.db import SQLITE_BUSY_TIMEOUT_MS
from syncbus.store.dialect import POSTGRES, dialect_of
from syncbus.store.tables import setting_table

LOCK_WAIT_SECONDS = 1.0
DEADLINE_SECONDS = 2.0
MIN_FREE_BYTES = 1024 * 1024
# Probes run on their own two threads: a stuck database stalls probes, not the API's threads.
_probes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="syncbus-readyz")


class NotReady(Exception):
    """Why the database cannot be written (safe to show: no URL, no path, no SQL)."""


def _sqlite_free_bytes(bus: IntegrationBus) -> int | None:
    database = bus.engine.url.database
    if not database or database == ":memory:":
        return None
    try:
        stats = os.statvfs(os.path.dirname(os.path.abspath(database)))
    except OSError:
        return None  # no such directory: opening the database will say so
    return stats.f_bavail * stats.f_frsize


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    text = str(getattr(exc, "orig", exc)).lower()
    code = getattr(getattr(exc, "orig", None), "sqlstate", None) or ""
    if "locked" in text or "busy" in text or code in ("55P03", "57014"):
        return f"the database is locked by another writer (waited {LOCK_WAIT_SECONDS:g} s)"
    if "full" in text or code == "53100":
        return "the disk holding the database is full"
    if "readonly" in text or "read-only" in text or code == "25006":
        return "the database is read-only"
    if isinstance(exc, (sa.exc.InterfaceError, sa.exc.DisconnectionError)) or code.startswith("08"):
        return "cannot connect to the database"
    return f"the database cannot be written ({type(exc).__name__})"


def _try_write(conn: sa.Connection) -> None:
    # A key of its own per probe: two probes at once never wait on each other's row.
    probe = {"key": f"syncbus.readyz.{uuid.uuid4().hex}", "value": ""}
    trans = conn.begin()  # SQLite: BEGIN IMMEDIATE, i.e. the write lock, or a wait for it
    try:
        if dialect_of(conn) is POSTGRES:
            ms = int(LOCK_WAIT_SECONDS * 1000)
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms + 500}")
        conn.execute(setting_table.insert().values(probe))
    finally:
        trans.rollback()


def check_writable(bus: IntegrationBus, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Raise ``NotReady`` unless a write would succeed now."""
    sqlite = dialect_of(bus.engine) is not POSTGRES
    if sqlite:
        free = _sqlite_free_bytes(bus)
        if free is not None and free < min_free_bytes:
            raise NotReady(f"the disk holding the database is full ({free} bytes free)")
    try:
        with bus.engine.connect() as conn:
            if not sqlite:
                _try_write(conn)
                return
            # The bus's connections wait 30 s for SQLite's lock; a probe must answer sooner.
            # Set on the driver's connection: through SQLAlchemy it would begin a transaction.
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute(f"PRAGMA busy_timeout = {int(LOCK_WAIT_SECONDS * 1000)}")
            try:
                _try_write(conn)
            finally:
                raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    except sa.exc.SQLAlchemyError as exc:
        raise NotReady(_reason(exc)) from exc


async def readiness(bus: IntegrationBus, min_free_bytes: int = MIN_FREE_BYTES) -> str | None:
    """None when the database can be written; otherwise why not, within ``DEADLINE_SECONDS``."""
    loop = asyncio.get_running_loop()
    probe = loop.run_in_executor(_probes, check_writable, bus, min_free_bytes)
    try:
        await asyncio.wait_for(probe, DEADLINE_SECONDS)
    except NotReady as exc:
        return str(exc)
    except TimeoutError:
        return f"the database did not answer within {DEADLINE_SECONDS:g} s"
    except Exception as exc:  # a probe answers, whatever went wrong
        return f"the database cannot be written ({type(exc).__name__})"
    return None
