"""Schema migrations with Alembic, run programmatically (``create_schema``, ``syncbus db upgrade``).

Concurrent upgrades from several processes are serialised: on PostgreSQL by an advisory lock
held for the upgrade's transaction, on SQLite by the write lock BEGIN IMMEDIATE takes.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from syncbus.store.dialect import dialect_of

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x5359_4E43  # "SYNC": advisory lock id for schema upgrades


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine) -> bool:
    """Bring the schema to the newest revision; returns True when anything was applied."""
    head = head_revision()
    # A read-only probe: on SQLite it begins DEFERRED, so an up-to-date schema costs no wait
    # for the write lock (a running batch may hold it for a while).
    with engine.execution_options(readonly=True).connect() as probe:
        if current_revision(probe) == head:
            return False
    with engine.begin() as conn:
        dialect_of(conn).serialize(conn, _LOCK_KEY)
        if current_revision(conn) == head:
            return False
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return True
