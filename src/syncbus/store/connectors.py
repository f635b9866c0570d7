"""Connector rows: registration, lookups by name and id, the enabled switch, the list with
queue counts, and which connectors have queued tasks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from syncbus.enums import Ordering
from syncbus.store.db import utcnow
from syncbus.store.dialect import dialect_of
from syncbus.store.leases import ensure_lease_row
from syncbus.store.reads import QUEUE_COUNTS
from syncbus.store.tables import connector_table as ct
from syncbus.store.tables import task_table as t

_ID_BY_NAME = sa.select(ct.c.connector_id).where(ct.c.connector_name == sa.bindparam("name"))
_ROW_BY_NAME = sa.select(ct).where(ct.c.connector_name == sa.bindparam("name"))
_ROW_BY_ID = sa.select(ct).where(ct.c.connector_id == sa.bindparam("cid"))
_ENABLED_BY_NAME = sa.select(ct.c.connector_name, ct.c.enabled)
_WITH_TASKS = ct.c.connector_id.in_(sa.select(t.c.connector_id).distinct())


def _with_counts() -> sa.Select[Any]:
    counts = QUEUE_COUNTS
    return (
        sa.select(ct, counts.c.queued.label("pending"), counts.c.failed)
        .outerjoin(counts, counts.c.connector_id == ct.c.connector_id)
        .order_by(ct.c.connector_name)
    )


_WITH_COUNTS = _with_counts()


def register_connector(
    conn: sa.Connection,
    name: str,
    display_name: str,
    class_path: str | None,
    rules: Mapping[str, Any] | None = None,
) -> int:
    """Insert the connector (enabled) or update its display name, class path and rules (the
    wire values of its class's ordering, dependency timeout and retry delays; its enabled
    switch is left as it is); make sure it has a lease row. Returns its id."""
    existing = conn.execute(_ID_BY_NAME, {"name": name}).scalar()
    values = {
        "display_name": display_name,
        "class_path": class_path,
        **(rules or {"ordering": Ordering.CONNECTOR.value}),
        "modified_at": utcnow(),
    }
    if existing is None:
        dialect_of(conn).insert_ignore(
            conn, ct, {"connector_name": name, "enabled": True, **values}
        )
    else:
        conn.execute(ct.update().where(ct.c.connector_id == existing).values(values))
    cid = int(conn.execute(_ID_BY_NAME, {"name": name}).scalar_one())
    ensure_lease_row(conn, cid)
    return cid


RULE_COLUMNS = (
    "ordering",
    "dependency_timeout",
    "retry_delay",
    "retry_max_delay",
    "quarantine_after",
    "coalesce",
)


def set_connector_rules(conn: sa.Connection, name: str, rules: Mapping[str, Any]) -> None:
    """Record the rules the connector's class declares (when they changed since it was
    registered), so that every process shows and runs the same."""
    conn.execute(
        ct.update().where(ct.c.connector_name == name).values(**rules, modified_at=utcnow())
    )


def connector_by_name(conn: sa.Connection, name: str) -> sa.Row[Any] | None:
    """The connector's row (id, name, display name, class path, enabled, ordering), or
    None."""
    return conn.execute(_ROW_BY_NAME, {"name": name}).first()


def connector_by_id(conn: sa.Connection, connector_id: int) -> sa.Row[Any]:
    """The row of a connector that exists (a task's connector)."""
    return conn.execute(_ROW_BY_ID, {"cid": connector_id}).one()


def not_registered(conn: sa.Connection, name: str) -> str:
    """Why ``name`` names no connector: with the registered name it differs from only in
    case, which is easy to miss in a URL (connector names are case-sensitive)."""
    text = f"no connector named {name!r} is registered"
    if not isinstance(name, str) or not name:
        return text
    stmt = (
        sa.select(ct.c.connector_name)
        .where(sa.func.lower(ct.c.connector_name) == name.lower())
        .order_by(ct.c.connector_name)
        .limit(1)
    )
    match = conn.execute(stmt).scalar()
    if match is not None and match != name:
        text += f"; did you mean {match!r}? (connector names are case-sensitive)"
    return text


def connector_exists(conn: sa.Connection, name: str) -> bool:
    """Whether a connector of that name is registered (one indexed lookup, no counts)."""
    return conn.execute(_ID_BY_NAME, {"name": name}).first() is not None


def set_connector_enabled(conn: sa.Connection, name: str, enabled: bool) -> bool:
    """Switch the connector on or off; False when no connector has that name."""
    result = conn.execute(
        ct.update().where(ct.c.connector_name == name).values(enabled=enabled, modified_at=utcnow())
    )
    return result.rowcount > 0


def connectors_with_counts(conn: sa.Connection) -> list[sa.Row[Any]]:
    """Every connector's row with ``pending`` (queued tasks) and ``failed`` (those with an
    error), both None for an empty queue; by name."""
    return list(conn.execute(_WITH_COUNTS).all())


def connectors_with_tasks(conn: sa.Connection, *, enabled_only: bool = False) -> list[sa.Row[Any]]:
    """The rows of the connectors that have queued tasks (only the enabled ones, if asked),
    by name."""
    stmt = sa.select(ct).where(_WITH_TASKS)
    if enabled_only:
        stmt = stmt.where(ct.c.enabled.is_(True))
    return list(conn.execute(stmt.order_by(ct.c.connector_name)).all())


def enabled_by_name(conn: sa.Connection) -> dict[str, bool]:
    """Each connector's name and whether it is enabled."""
    return {str(n): bool(e) for n, e in conn.execute(_ENABLED_BY_NAME)}


def orderings(conn: sa.Connection) -> dict[str, str]:
    """Each connector's name and the wire value of its ordering."""
    return {str(n): str(o) for n, o in conn.execute(sa.select(ct.c.connector_name, ct.c.ordering))}


def set_connector_queue_limit(conn: sa.Connection, name: str, limit: int | None) -> bool:
    """Set (or, with None, remove) the connector's queue limit; False when no connector has
    that name."""
    result = conn.execute(
        ct.update()
        .where(ct.c.connector_name == name)
        .values(queue_limit=limit, modified_at=utcnow())
    )
    return result.rowcount > 0
