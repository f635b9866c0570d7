"""Where the bench runs: a scratch database of its own, and what the report says about the machine.

* SQLite: ``db_url`` None means a fresh file in a temporary directory (removed afterwards); a
  given ``sqlite:///path`` must not exist yet or must be a database an earlier bench run made
  (it holds the ``bench_marker`` table), which is then replaced.
* PostgreSQL: the bench creates a fresh database ``syncbus_bench_<pid>_<random>`` on the server
  that ``db_url`` names and drops it at the end; the database named in the URL is only used to
  issue ``CREATE DATABASE`` and is never written to.
"""

from __future__ import annotations

import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

import syncbus
from syncbus.content.registry import TypeRegistry
from syncbus.content.tables import tree_table
from syncbus.errors import ConfigurationError
from syncbus.store.db import resolve_url

MARKER = "bench_marker"
_SQLITE_SYNC = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


@dataclass
class Scratch:
    """A database that belongs to this bench run."""

    url: str
    backend: str
    name: str
    sqlite_path: Path | None = None
    _tmpdir: Path | None = None
    _admin_url: str | None = None
    keep: bool = field(default=False)

    def drop(self) -> None:
        if self._admin_url is not None:
            admin = sa.create_engine(self._admin_url, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            finally:
                admin.dispose()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


def open_scratch(db_url: str | None) -> Scratch:
    if db_url is None:
        tmpdir = Path(tempfile.mkdtemp(prefix="syncbus-bench-"))
        path = tmpdir / "bench.db"
        _mark_sqlite(path)
        return Scratch(f"sqlite:///{path}", "sqlite", str(path), path, _tmpdir=tmpdir)
    url = resolve_url(db_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ConfigurationError("the bench needs a SQLite file, not an in-memory database")
        path = Path(url.database).resolve()
        _replace_sqlite(path)
        return Scratch(f"sqlite:///{path}", "sqlite", str(path), path)
    name = f"syncbus_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin_url = url.render_as_string(hide_password=False)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.DBAPIError as exc:
        raise ConfigurationError(
            f"the bench creates a scratch database on the server of {db_url!r} and could not: "
            f"{exc.orig}. Use a role allowed to CREATE DATABASE."
        ) from exc
    finally:
        admin.dispose()
    scratch_url = url.set(database=name).render_as_string(hide_password=False)
    return Scratch(scratch_url, "postgresql", name, _admin_url=admin_url)


def _mark_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE {MARKER} (created_by TEXT)")
        conn.execute(f"INSERT INTO {MARKER} VALUES ('syncbus bench')")
    conn.close()


def _replace_sqlite(path: Path) -> None:
    if path.exists() and path.stat().st_size > 0:
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                ours = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MARKER,)
                ).fetchone()
            conn.close()
        except sqlite3.DatabaseError:
            ours = None
        if not ours:
            raise ConfigurationError(
                f"{path} exists and was not made by the bench; give a new file name (the bench "
                "replaces its own earlier files only)"
            )
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    _mark_sqlite(path)


# -- between phases ---------------------------------------------------------------------------
def reset_content(engine: sa.Engine, registry: TypeRegistry) -> None:
    """Remove what the timed tasks wrote (posts, memberships, article pages), keep the setup,
    then let the database tidy up, so every phase starts from the same content."""
    with engine.begin() as conn:
        conn.execute(registry.table("forums.forumpost").delete())
        conn.execute(registry.table("cms.userrole").delete())
        conn.execute(tree_table.delete().where(tree_table.c.node_class_name == "cms.article"))
    maintenance(engine)


def maintenance(engine: sa.Engine) -> None:
    """PostgreSQL: VACUUM ANALYZE (dead rows of the last phase); SQLite: checkpoint the WAL."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        return
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cur.close()
    finally:
        raw.close()


# -- what the report says about where it ran ----------------------------------------------------
def durability(engine: sa.Engine) -> dict[str, Any]:
    """The settings that decide what a commit costs, as the bus's own connections see them."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            names = ("synchronous_commit", "fsync", "wal_sync_method", "full_page_writes")
            return {n: conn.exec_driver_sql(f"SHOW {n}").scalar() for n in names}
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        conn.rollback()
    return {"journal_mode": mode, "synchronous": _SQLITE_SYNC.get(int(sync or 0), str(sync))}


def machine(engine: sa.Engine) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gb": _ram_gb(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "sqlalchemy": sa.__version__,
        "syncbus": syncbus.__version__,
        "source": _source_revision(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": None,
    }
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            info["postgresql"] = conn.exec_driver_sql("SHOW server_version").scalar()
    return info


def _source_revision() -> str | None:
    """The git commit of the syncbus source that ran, when it runs from a checkout."""
    root = Path(syncbus.__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> str:
        cmd = ["git", "-C", str(root), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "src", ":!src/syncbus/bench")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{' + uncommitted changes' if dirty else ''}" if head else None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def libpq_url(url: str) -> str:
    """The URL without SQLAlchemy's driver suffix (for psycopg / procrastinate)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
