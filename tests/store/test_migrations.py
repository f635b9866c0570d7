"""The migrations build exactly the schema that store/tables.py and content/tables.py declare,
on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from syncbus import IntegrationBus
from syncbus.store import migrate
from syncbus.store.db import metadata


def test_migrations_match_the_declared_schema(bus: IntegrationBus) -> None:
    with bus.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_upgrade_twice_changes_nothing(bus: IntegrationBus) -> None:
    assert migrate.upgrade(bus.engine) is False
    bus.create_schema()
    assert bus.get_object("cms.site", "main") is not None
