"""Engine setup per dialect: SQLite (embedded default) and PostgreSQL through psycopg 3."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from syncbus.errors import ConfigurationError

DEFAULT_URL = "sqlite:///syncbus.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option (SQLite): the connection's next statements run in autocommit mode, each in
# its own implicit transaction, with no BEGIN and no ROLLBACK round trip. For single-statement
# reads only; switch it off (after ``rollback()``) before writing.
AUTOCOMMIT_READS = "syncbus_autocommit_reads"


def resolve_url(url: str | URL | None) -> URL:
    """The database URL: the argument, else ``SYNCBUS_DATABASE_URL``, else ``./syncbus.db``.

    ``postgresql://`` and ``postgres://`` mean psycopg 3; other drivers are refused with a hint.
    """
    raw = url if url is not None else os.environ.get("SYNCBUS_DATABASE_URL") or DEFAULT_URL
    try:
        parsed = make_url(raw) if isinstance(raw, str) else raw
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(
            f"cannot parse database URL {str(raw)!r}: use sqlite:///path.db or "
            "postgresql://user@host/dbname"
        ) from exc
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        elif parsed.get_driver_name() != "psycopg":
            raise ConfigurationError(
                f"database URL uses driver {parsed.get_driver_name()!r}; syncbus talks to "
                "PostgreSQL through psycopg 3: use postgresql+psycopg://..."
            )
    elif backend != "sqlite":
        raise ConfigurationError(
            f"unsupported database {backend!r}; syncbus runs on SQLite and PostgreSQL"
        )
    return parsed


def make_engine(url: str | URL | None, *, echo: bool = False) -> sa.Engine:
    parsed = resolve_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo)
    return sa.create_engine(parsed, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_engine(url: URL, *, echo: bool) -> sa.Engine:
    """SQLite with WAL, a busy timeout, foreign keys, and writers that BEGIN IMMEDIATE.

    pysqlite's own transaction handling is switched off so that SQLAlchemy's BEGIN is the one
    that runs: writers take the write lock up front (no lock-upgrade deadlocks that a busy
    timeout cannot resolve); a connection marked ``readonly`` begins DEFERRED; one marked
    ``AUTOCOMMIT_READS`` does not begin at all.
    """
    memory = url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    if memory:
        kwargs["poolclass"] = sa.pool.StaticPool
        kwargs["connect_args"]["check_same_thread"] = False
    engine = sa.create_engine(url, echo=echo, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        options = conn.get_execution_options()
        if options.get(AUTOCOMMIT_READS, False):
            return  # each statement is its own read transaction; no lock, nothing to end
        conn.exec_driver_sql("BEGIN" if options.get("readonly", False) else "BEGIN IMMEDIATE")

    return engine


def is_postgres(engine: sa.Engine | sa.Connection) -> bool:
    return engine.dialect.name == "postgresql"


def db_now_epoch(dialect_name: str) -> sa.ColumnElement[float]:
    """The database's clock as seconds since the epoch (leases use it, not the workers' clocks)."""
    if dialect_name == "postgresql":
        return sa.literal_column("extract(epoch from clock_timestamp())", sa.Float)
    return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)
