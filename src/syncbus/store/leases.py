"""Per-connector leases: who runs a connector, until when (on the database's clock), which
task ids the current run holds, and how the last run ended."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from syncbus.store.db import as_utc, utcnow
from syncbus.store.dialect import dialect_of
from syncbus.store.tables import lease_table


def ensure_lease_row(conn: sa.Connection, connector_id: int) -> None:
    dialect_of(conn).insert_ignore(conn, lease_table, {"connector_id": connector_id})


def acquire_lease(conn: sa.Connection, connector_id: int, owner: str, seconds: float) -> bool:
    """Take the connector's lease if it is free or expired: one atomic UPDATE."""
    now = dialect_of(conn).now_epoch()
    t = lease_table
    result = conn.execute(
        t.update()
        .where(
            t.c.connector_id == connector_id,
            sa.or_(t.c.owner.is_(None), t.c.expires_at.is_(None), t.c.expires_at < now),
        )
        .values(
            owner=owner,
            expires_at=now + seconds,
            run_first_task_id=None,
            run_last_task_id=None,
        )
    )
    return result.rowcount == 1


def take_lease(
    conn: sa.Connection, connector_id: int, owner: str, seconds: float
) -> tuple[bool, tuple[int, int] | None]:
    """Take the lease (``acquire_lease``) and say whether its last holder died with a batch in
    flight: the ids [first, last] it had claimed and not committed, or None. A run records
    its batch on the lease when it claims it and clears it in the batch's own commit, so a
    range left on a lease that expired is the batch its runner was applying when it died."""
    t = lease_table
    before = conn.execute(
        sa.select(t.c.owner, t.c.run_first_task_id, t.c.run_last_task_id).where(
            t.c.connector_id == connector_id
        )
    ).first()
    if before is None:
        ensure_lease_row(conn, connector_id)
    if not acquire_lease(conn, connector_id, owner, seconds):
        return False, None
    if before is None or before.owner is None or before.run_first_task_id is None:
        return True, None
    return True, (int(before.run_first_task_id), int(before.run_last_task_id))


def holder(conn: sa.Connection, connector_id: int) -> tuple[str, float] | None:
    """Who holds the connector's lease and for how many more seconds (on the database's
    clock; 0 when it has run out), or None when nobody does."""
    t = lease_table
    left = t.c.expires_at - dialect_of(conn).now_epoch()
    row = conn.execute(
        sa.select(t.c.owner, left).where(t.c.connector_id == connector_id, t.c.owner.is_not(None))
    ).first()
    if row is None:
        return None
    return str(row[0]), max(0.0, float(row[1] or 0.0))


def renew_lease(
    conn: sa.Connection,
    connector_id: int,
    owner: str,
    seconds: float,
    **values: Any,
) -> bool:
    """Extend the lease (and record the batch in hand); False when it was lost."""
    now = dialect_of(conn).now_epoch()
    t = lease_table
    result = conn.execute(
        t.update()
        .where(t.c.connector_id == connector_id, t.c.owner == owner)
        .values(expires_at=now + seconds, **values)
    )
    return result.rowcount == 1


def release_lease(
    conn: sa.Connection, connector_id: int, owner: str, last_run: dict[str, Any] | None = None
) -> None:
    """Give the lease up; with ``last_run`` (``last_run_*`` columns but the finish time), say
    how the run went. A run that found nothing to do passes None: the last run the dashboard
    shows is the last one that did something."""
    t = lease_table
    values: dict[str, Any] = {
        "owner": None,
        "expires_at": None,
        "run_first_task_id": None,
        "run_last_task_id": None,
    }
    if last_run is not None:
        values.update(last_run, last_run_finished_at=utcnow())
    conn.execute(
        t.update().where(t.c.connector_id == connector_id, t.c.owner == owner).values(values)
    )


def record_run(conn: sa.Connection, connector_id: int, last_run: dict[str, Any]) -> None:
    """How a run that took no lease (a lease-free ENTITY run) went, on the lease row, as
    ``release_lease`` records it for a run that held the lease."""
    ensure_lease_row(conn, connector_id)
    t = lease_table
    conn.execute(
        t.update()
        .where(t.c.connector_id == connector_id)
        .values({**last_run, "last_run_finished_at": utcnow()})
    )


def last_run_rate(conn: sa.Connection, connector_id: int) -> float | None:
    """Tasks a second the connector's last finished run applied (its drain rate), or None
    when it has none to tell."""
    t = lease_table
    row = conn.execute(
        sa.select(t.c.last_run_applied, t.c.last_run_started_at, t.c.last_run_finished_at).where(
            t.c.connector_id == connector_id
        )
    ).first()
    if row is None or not row.last_run_applied:
        return None
    started, finished = as_utc(row.last_run_started_at), as_utc(row.last_run_finished_at)
    if started is None or finished is None or finished <= started:
        return None
    return float(row.last_run_applied) / (finished - started).total_seconds()
