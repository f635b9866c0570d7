"""The query planner's view of the content tables a process fills fast (PostgreSQL).

A prepared statement keeps the plan PostgreSQL chose for it, and that plan is made again only
when the table's statistics change. A batch's lookups (``TargetCache``, ``Resolver``) run as
prepared statements (psycopg prepares a statement run five times), so on a table that was
empty when they were planned they keep scanning the whole table while the first load fills
it: a load of 20,000 new users drained at 1,900 tasks/s, and at 5,000 once its table was
analysed. Autovacuum analyses a table only after its naptime (a minute by default).

So the processor counts the rows its batches insert into each table (the held INSERTs,
``WriteBehind.inserted``) and, once a table has grown by as many rows as the planner believed
it held (at least ``GROWN``), refreshes its statistics (``Dialect.refresh_planner``: ANALYZE)
after the batch has committed: a handful of ANALYZEs over a load, each of a bounded sample.
A failure there is logged and changes nothing else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import sqlalchemy as sa

from syncbus.store.dialect import dialect_of

log = logging.getLogger("syncbus.engine")

GROWN = 1_000  # rows inserted into a table before its statistics are looked at


class GrowthWatch:
    """Rows inserted per table since its statistics were last refreshed, for one process's
    runs (on several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[sa.Table, int] = {}
        self._rows: dict[sa.Table, float] = {}  # what the planner believed at the last look

    def inserted(self, engine: sa.Engine, counts: Mapping[sa.Table, int]) -> None:
        """Count a committed batch's new rows; refresh the statistics of the tables that
        grew by as much as the planner believed they held."""
        due = []
        with self._lock:
            for table, n in counts.items():
                since = self._since[table] = self._since.get(table, 0) + n
                if since >= max(GROWN, self._rows.get(table, 0.0)):
                    self._since[table] = 0  # this caller looks at it; the next count anew
                    due.append(table)
        for table in due:
            self._refresh(engine, table, known=table in self._rows)

    def _refresh(self, engine: sa.Engine, table: sa.Table, known: bool) -> None:
        """ANALYZE ``table``; the first time, only if the planner believes it holds fewer
        rows than ``GROWN`` (a large table it knows gets its first look after as many)."""
        try:
            with engine.begin() as conn:
                dialect = dialect_of(conn)
                rows = None if known else dialect.planner_rows(conn, table)
                if rows is None or rows < GROWN:  # grown past what the planner knows
                    rows = dialect.refresh_planner(conn, table)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("cannot refresh the planner's statistics of %s: %s", table.name, exc)
            return
        if rows is not None:
            with self._lock:
                self._rows[table] = rows
