"""The processes that run connectors (CONTRACT additions: ``IntegrationBus.list_workers``):
each registers when it starts, is seen again every heartbeat on the database's clock, and
leaves when it stops. One that stopped being seen (killed, frozen, its machine gone) is shown
as gone for an hour, then forgotten."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from syncbus.store.db import utcnow
from syncbus.store.dialect import dialect_of
from syncbus.store.tables import worker_table as w

# Seen within this many heartbeats: alive.
ALIVE_BEATS = 3
# Not seen for this long: forgotten (by the next heartbeat of any process).
FORGET_SECONDS = 3600.0


def register(
    conn: sa.Connection, worker_id: str, kind: str, host: str, pid: int, threads: int, beat: float
) -> None:
    conn.execute(
        w.insert().values(
            worker_id=worker_id,
            kind=kind,
            host=host[:255],
            pid=pid,
            threads=threads,
            started_at=utcnow(),
            seen_at=dialect_of(conn).now_epoch(),
            heartbeat=beat,
        )
    )


def seen(conn: sa.Connection, worker_id: str) -> bool:
    """Mark the worker seen now, and forget the workers gone for long; False when its row was
    gone (forgotten while it was frozen: the caller registers it again)."""
    now = dialect_of(conn).now_epoch()
    conn.execute(w.delete().where(w.c.seen_at < now - FORGET_SECONDS))
    return bool(
        conn.execute(w.update().where(w.c.worker_id == worker_id).values(seen_at=now)).rowcount
    )


def leave(conn: sa.Connection, worker_id: str) -> None:
    conn.execute(w.delete().where(w.c.worker_id == worker_id))


def listing(conn: sa.Connection) -> list[Any]:
    """Every worker known, newest first, with ``ago``: seconds since it was last seen, on the
    database's clock (``is_alive`` tells from it and the worker's heartbeat)."""
    ago = (dialect_of(conn).now_epoch() - w.c.seen_at).label("ago")
    stmt = sa.select(w, ago).order_by(w.c.started_at.desc(), w.c.worker_id)
    return list(conn.execute(stmt))


def is_alive(ago: float, heartbeat: float) -> bool:
    return ago <= heartbeat * ALIVE_BEATS
