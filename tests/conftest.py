"""Shared fixtures: one behaviour suite, run on SQLite and on PostgreSQL.

PostgreSQL tests need ``SYNCBUS_TEST_POSTGRES_URL`` (e.g. postgresql://postgres@127.0.0.1/test);
without it they skip. Each PostgreSQL test gets a fresh database cloned from a migrated template,
so tests never see each other's rows.
"""

from __future__ import annotations

import os
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


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL on each backend: a SQLite file in tmp, or a fresh PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'syncbus.db'}"


@pytest.fixture
def bus(db_url: str) -> Iterator[IntegrationBus]:
    """A bus with its schema created, on each backend."""
    b = IntegrationBus(db_url)
    b.create_schema()
    yield b
    b.close()
