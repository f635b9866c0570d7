"""Shared fixtures: one behaviour suite, run on SQLite and on PostgreSQL.

PostgreSQL tests need ``SYNCBUS_TEST_POSTGRES_URL`` (e.g. postgresql://postgres@127.0.0.1/test);
without it they skip. Each test gets a fresh database cloned from a migrated template (a copy of
one migrated SQLite file; a PostgreSQL ``CREATE DATABASE ... TEMPLATE``), so tests never see each
other's rows and pay for the migrations once per session, not once per test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from syncbus import IntegrationBus

PG_URL = os.environ.get("SYNCBUS_TEST_POSTGRES_URL")
_TEMPLATE = f"syncbus_tmpl_{os.getpid()}"

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``postgres`` every test that needs PostgreSQL: the PostgreSQL half of the ``db_url``
    parametrization (marked in ``BACKENDS``) and every test that asks for ``pg_url``, directly
    or through a fixture of its own. ``-m "not postgres"`` leaves them out."""
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def _admin_engine() -> sa.Engine:
    assert PG_URL
    url = make_url(PG_URL).set(drivername="postgresql+psycopg")
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database to clone per test."""
    if not PG_URL:
        pytest.skip("SYNCBUS_TEST_POSTGRES_URL is not set")
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{_TEMPLATE}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{_TEMPLATE}"')
    url = make_url(PG_URL).set(drivername="postgresql+psycopg", database=_TEMPLATE)
    bus = IntegrationBus(url.render_as_string(hide_password=False))
    bus.create_schema()
    bus.close()
    yield _TEMPLATE
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh PostgreSQL database for this test."""
    template = request.getfixturevalue("pg_template")
    name = f"syncbus_t_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    url = make_url(PG_URL).set(drivername="postgresql+psycopg", database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file to copy per test (migrating costs ~120 ms, a copy ~1 ms)."""
    path = tmp_path_factory.mktemp("template") / "syncbus.db"
    bus = IntegrationBus(f"sqlite:///{path}")
    bus.create_schema()
    bus.close()
    # Fold any WAL into the main file, so that copying the .db alone copies the whole database.
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert not leftovers, f"the SQLite template left {leftovers} beside it"
    return path


def sqlite_copy(template: Path, path: Path) -> str:
    """The URL of a fresh copy of the migrated template at ``path``."""
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """The URL of a migrated SQLite database of this test's own."""
    return sqlite_copy(sqlite_template, tmp_path / "syncbus.db")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database URL on each backend: a copy of the SQLite template in tmp, or a fresh
    PostgreSQL database cloned from its template."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(request.getfixturevalue("sqlite_url"))


@pytest.fixture
def bus(db_url: str) -> Iterator[IntegrationBus]:
    """A bus with its schema created, on each backend."""
    b = IntegrationBus(db_url)
    b.create_schema()
    yield b
    b.close()


@pytest.fixture
def hard(bus: IntegrationBus) -> IntegrationBus:
    """A bus with the object type of every column type (``HARD``), and a connector."""
    from tests.behaviour.test_intake_hardening import HARD
    from tests.helpers import add_connector

    bus.register_object_type(HARD)
    bus.create_schema()
    add_connector(bus)
    return bus
