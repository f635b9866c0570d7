"""Readiness: can the database be written right now? A tiny insert in a transaction that is
rolled back, with short lock timeouts, plus (SQLite) the free space of the database's disk,
since a rolled-back write never reaches the disk."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from syncbus.bus import IntegrationBus
from syncbus.store.db import BUSY_TIMEOUT
from syncbus.store.dialect import POSTGRES, dialect_of
from syncbus.store.switches import probe_write

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


def check_writable(bus: IntegrationBus, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Raise ``NotReady`` unless a write would succeed now."""
    if dialect_of(bus.engine) is not POSTGRES:
        free = _sqlite_free_bytes(bus)
        if free is not None and free < min_free_bytes:
            raise NotReady(f"the disk holding the database is full ({free} bytes free)")
    wait_ms = int(LOCK_WAIT_SECONDS * 1000)
    # The bus's connections wait 30 s for SQLite's write lock; a probe must answer sooner.
    probe_db = bus.engine.execution_options(**{BUSY_TIMEOUT: wait_ms})
    try:
        with probe_db.connect() as conn:
            probe_write(conn, wait_ms)
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
