"""Engine setup per dialect: SQLite (embedded default) and PostgreSQL through psycopg 3."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from syncbus.errors import ConfigurationError

DEFAULT_URL = "sqlite:///syncbus.db"

# One MetaData for every table syncbus creates: the bus's own (``store.tables``) and the
# content repository's (``content.tables``). The migrations create exactly these.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
# A 64-bit id on PostgreSQL; SQLite's rowid alias must be spelled INTEGER.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UtcDateTime = sa.DateTime(timezone=True)
# The largest BIGINT (int8): the highest task id, and the range of 64-bit integer columns.
MAX_ID = 2**63 - 1
# Values bound per IN list: well under SQLite's default limit of 999 parameters a statement.
IN_CHUNK = 500
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Connections a bus's engine keeps, and the most it opens at once (the same number: no
# overflow). An overflow connection is closed as soon as it is given back, so a load above
# the kept size (32 concurrent HTTP logging clients, say) opened and closed a connection
# every few calls (0.2 to 0.3 per task on both backends), more than halving the rate of 32 threads
# logging on PostgreSQL. The caps are those of SQLAlchemy's defaults before (5 + 10 for
# SQLite, 10 + 20 for PostgreSQL); only the connections a burst opened now stay open.
SQLITE_POOL_SIZE = 15
PG_POOL_SIZE = 30
# Execution option (SQLite): the connection's next statements run in autocommit mode, each in
# its own implicit transaction, with no BEGIN and no ROLLBACK round trip. For single-statement
# reads only; switch it off (after ``rollback()``) before writing.
AUTOCOMMIT_READS = "syncbus_autocommit_reads"
# Execution option (SQLite): how long this connection's next BEGIN waits for the write lock,
# in ms. Admin actions wait a few seconds, then say the task is busy, instead of 30 s.
BUSY_TIMEOUT = "syncbus_busy_timeout_ms"
# PostgreSQL session settings of every bus connection: no statement waits on a lock for
# longer than LOCK_TIMEOUT, and a session that stays idle inside a transaction (its process
# was frozen, paused or cut off by the network) is ended by the server, which rolls its
# transaction back and frees its locks, so that other workers can take its connector over.
LOCK_TIMEOUT_S = 5.0
# How often a PostgreSQL session checks, while a statement runs, that its client is alive.
CLIENT_CHECK_MS = 1000
# libpq TCP keepalives: a peer that vanished is noticed in about a minute, not hours.
_PG_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


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


def make_engine(
    url: str | URL | None, *, echo: bool = False, idle_in_transaction_s: float = 30.0
) -> sa.Engine:
    """An engine for the bus. On PostgreSQL, ``idle_in_transaction_s`` is how long the server
    lets a session sit idle inside a transaction before it ends it (the bus passes its lease
    length: a frozen runner's batch is rolled back by the time its lease has run out)."""
    parsed = resolve_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo)
    return _pg_engine(parsed, echo=echo, idle_in_transaction_s=idle_in_transaction_s)


def _pg_engine(url: URL, *, echo: bool, idle_in_transaction_s: float) -> sa.Engine:
    connect_args = {k: v for k, v in _PG_KEEPALIVES.items() if k not in url.query}
    engine = sa.create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=PG_POOL_SIZE,
        max_overflow=0,
        connect_args=connect_args,
    )
    settings = (
        f"SET lock_timeout = {int(LOCK_TIMEOUT_S * 1000)}; "
        f"SET idle_in_transaction_session_timeout = {max(1000, int(idle_in_transaction_s * 1000))}"
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True  # session settings, outside any transaction
        with dbapi_conn.cursor() as cur:
            cur.execute(settings)
            if dbapi_conn.info.server_version >= 140000:
                # A process killed while its statement runs (a trigger that never returns)
                # leaves a session that runs on, holding its batch's row locks, until it next
                # talks to the client; checked every second, the server ends it within one.
                cur.execute(f"SET client_connection_check_interval = {CLIENT_CHECK_MS}")
        dbapi_conn.autocommit = autocommit

    return engine


# One lock per SQLite database file and process: the writers of one process queue on it
# before their BEGIN IMMEDIATE. A writer waiting on SQLite's own busy handler sleeps in steps
# of up to 100 ms and wakes late; one waiting here wakes the moment the writer ahead commits.
# Writers of other processes still meet at SQLite's write lock (the busy timeout).
_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(path: str) -> threading.Lock:
    key = os.path.realpath(path)
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.Lock())


class _SQLiteConnection(sqlite3.Connection):
    """A pysqlite connection that holds its file's in-process write lock (``_write_lock``)
    from its BEGIN IMMEDIATE until its transaction ends, however it ends."""

    write_lock: threading.Lock | None = None
    _holds = False

    def take_write_lock(self, timeout_s: float) -> None:
        """Wait for the other writers of this process; after ``timeout_s`` go on anyway (SQLite's
        busy timeout then decides, as it would without this lock)."""
        lock = self.write_lock
        if lock is not None and not self._holds and lock.acquire(timeout=timeout_s):
            self._holds = True

    def release_write_lock(self) -> None:
        if self._holds:
            self._holds = False
            assert self.write_lock is not None
            self.write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.release_write_lock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.release_write_lock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.release_write_lock()


def _sqlite_engine(url: URL, *, echo: bool) -> sa.Engine:
    """SQLite with WAL, a busy timeout, foreign keys, and writers that BEGIN IMMEDIATE.

    pysqlite's own transaction handling is switched off so that SQLAlchemy's BEGIN is the one
    that runs: writers take the write lock up front (no lock-upgrade deadlocks that a busy
    timeout cannot resolve); a connection marked ``readonly`` begins DEFERRED; one marked
    ``AUTOCOMMIT_READS`` does not begin at all.
    """
    memory = url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {
        "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "factory": _SQLiteConnection}
    }
    if memory:
        kwargs["poolclass"] = sa.pool.StaticPool
        kwargs["connect_args"]["check_same_thread"] = False
    else:
        kwargs.update(pool_size=SQLITE_POOL_SIZE, max_overflow=0)
    engine = sa.create_engine(url, echo=echo, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        if not memory and isinstance(dbapi_conn, _SQLiteConnection):
            dbapi_conn.write_lock = _write_lock(str(url.database))
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
        busy = int(options.get(BUSY_TIMEOUT, SQLITE_BUSY_TIMEOUT_MS))
        info = conn.connection.info
        if info.get(BUSY_TIMEOUT, SQLITE_BUSY_TIMEOUT_MS) != busy:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={busy}")
            info[BUSY_TIMEOUT] = busy
        if options.get("readonly", False):
            conn.exec_driver_sql("BEGIN")
            return
        dbapi_conn = conn.connection.dbapi_connection
        if not isinstance(dbapi_conn, _SQLiteConnection):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        dbapi_conn.take_write_lock(busy / 1000)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            dbapi_conn.release_write_lock()
            raise

    return engine


def column_length(column: sa.Column[Any]) -> int:
    """The declared length of a text column (the checks before a write read it here, so they
    never disagree with the schema)."""
    assert isinstance(column.type, sa.String) and column.type.length
    return column.type.length


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; every time syncbus reports is aware UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def stamp(value: Any) -> dt.datetime:
    """``as_utc`` of a NOT NULL column's value."""
    out = as_utc(value)
    assert out is not None
    return out
