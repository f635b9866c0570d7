"""The query planner's view of the content tables a process fills fast (PostgreSQL).

A prepared statement keeps the plan PostgreSQL chose for it, and that plan is made again only
when the table's statistics change. A batch's lookups (``TargetCache``, ``Resolver``) run as
prepared statements (psycopg prepares a statement run five times), so on a table that was
empty when they were planned they keep scanning the whole table while the first load fills
it: a load of 20,000 new users drained at 1,900 tasks/s, and at 5,000 once its table was
analysed. Autovacuum analyses a table only after its naptime (a minute by default).

So the processor counts the rows its batches insert into each table (the held INSERTs,
``WriteBehind.inserted``); every ``GROWN`` of them it reads what the planner believes the table
holds, and once it has inserted as many rows since it last analysed the table, it refreshes the
statistics (``Dialect.refresh_planner``: ANALYZE) after the batch has committed: a handful of
ANALYZEs over a load (the table doubles between two), each of a bounded sample, and none while
inserts trickle into a large table. A failure there is logged and changes nothing else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import sqlalchemy as sa

from syncbus.store.dialect import dialect_of

log = logging.getLogger("syncbus.engine")

GROWN = 1_000  # rows inserted into a table between two looks at its statistics


class GrowthWatch:
    """Rows inserted per table by one process's runs (on several threads): every ``GROWN``
    of them the planner's belief is read (``Dialect.planner_rows``, one cheap query), and
    once the rows inserted since the process last analysed the table are as many as it
    believes the table holds, the table is analysed. The belief is read each time, not
    remembered: a table emptied, reloaded or analysed by someone else meanwhile is judged by
    what the planner believes now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._look: dict[sa.Table, int] = {}  # rows inserted since the last look
        self._since: dict[sa.Table, int] = {}  # rows inserted since the last ANALYZE here

    def inserted(self, engine: sa.Engine, counts: Mapping[sa.Table, int]) -> None:
        """Count a committed batch's new rows; look at (and refresh) the statistics of the
        tables due for it."""
        due = []
        with self._lock:
            for table, n in counts.items():
                self._since[table] = self._since.get(table, 0) + n
                look = self._look[table] = self._look.get(table, 0) + n
                if look >= GROWN:
                    self._look[table] = 0  # this caller looks; the next count anew
                    due.append((table, self._since[table]))
        for table, since in due:
            if self._refresh(engine, table, since):
                with self._lock:
                    self._since[table] = max(self._since.get(table, 0) - since, 0)

    @staticmethod
    def _refresh(engine: sa.Engine, table: sa.Table, since: int) -> bool:
        """ANALYZE ``table`` if the planner believes it holds no more rows than ``since``;
        whether it did."""
        try:
            with engine.begin() as conn:
                dialect = dialect_of(conn)
                believed = dialect.planner_rows(conn, table)
                if believed is None or believed > since:
                    return False
                dialect.refresh_planner(conn, table)
                return True
        except sa.exc.SQLAlchemyError as exc:
            log.warning("cannot refresh the planner's statistics of %s: %s", table.name, exc)
            return False
