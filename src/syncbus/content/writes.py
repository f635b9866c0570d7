"""Write-behind for a batch's updates: UPDATEs held back and sent grouped, one ``executemany``
per statement (sqlite3 loops in C), instead of a statement per task. Used where the dialect
allows it (``Dialect.write_behind``: not on PostgreSQL, where psycopg would pipeline the
``executemany`` and the server then leaves its idle-in-transaction timeout unarmed).

Only the optimistic pass of a batch uses it (``Processor._apply_once``): any error there sends
the whole batch down the careful way, task by task, so an error raised when the held-back updates
are sent is handled exactly like one raised by the task that wrote them.

What a held-back update changes must be invisible until it is sent, so the statements that
could tell first send what is held (a ``before_execute`` listener on the connection; the caller
sends the rest before the queue's bookkeeping). Each sends the updates held for the tables it
could see, and, to keep each table's order, every update held before them:

* a SELECT: the tables it reads;
* a plain INSERT ... VALUES: nothing. Run before updates made earlier it can only meet a unique
  conflict they would have removed (the batch then goes the careful way), never escape one, and
  it neither creates nor removes a row an earlier update needs;
* a DELETE (whose cascades could reach any table), an upsert, an UPDATE sent now, SQL text,
  anything else: everything.

Held-back updates keep their order within each table; updates of different tables may be sent
in another order than they were made. That is invisible to the batch: an UPDATE by primary key
that leaves the key alone neither creates nor removes a row another table's foreign key could
need, and a unique or check constraint sees only its own table. (A database trigger that reads
another table could tell; the content tables have none.)
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import visitors
from sqlalchemy.sql.dml import Insert


class _Run:
    """Consecutive updates (within their tables) with one statement and one set of columns."""

    __slots__ = ("params", "stmt")

    def __init__(self, stmt: Any, params: dict[str, Any]) -> None:
        self.stmt = stmt
        self.params = [params]


class WriteBehind:
    """A batch's held-back UPDATEs on one connection; use as a context manager around the
    optimistic pass (it listens to the connection while open). The listener sees what goes
    through ``Connection.execute``, not ``exec_driver_sql``: call ``flush()`` before driver
    SQL that could read what is held (the engine does, before the history records)."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.held = 0  # updates held and not sent yet
        self.sent_statements = 0  # executemany calls made
        # Runs are numbered from the first ever held; ``_runs[0]`` is run number ``_base``.
        self._runs: list[_Run] = []
        self._base = 0
        self._open: dict[tuple[int, tuple[str, ...]], int] = {}  # (stmt, columns): run number
        self._last: dict[str, int] = {}  # table name: number of the last run that writes it
        self._sending = False

    def __enter__(self) -> WriteBehind:
        sa.event.listen(self.conn, "before_execute", self._before_execute)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.conn, "before_execute", self._before_execute)
        if exc[0] is None:
            self.flush()

    def update(self, stmt: Any, params: dict[str, Any], tables: tuple[sa.Table, ...]) -> None:
        """Hold back ``conn.execute(stmt, params)``, an UPDATE by primary key that writes
        ``tables`` and whose result nobody reads."""
        columns = tuple(params)
        key = (id(stmt), columns)
        number = self._open.get(key)
        # Join the open run of this statement only if no later run writes one of its tables:
        # the order within a table stays the order the tasks wrote in.
        if (
            number is not None
            and number >= self._base
            and all(self._last.get(t.name) == number for t in tables)
        ):
            self._runs[number - self._base].params.append(params)
        else:
            number = self._base + len(self._runs)
            self._runs.append(_Run(stmt, params))
            self._open[key] = number
            for t in tables:
                self._last[t.name] = number
        self.held += 1

    def flush(self, upto: int | None = None) -> None:
        """Send what is held, in order (with ``upto``, the runs up to that number only)."""
        count = len(self._runs) if upto is None else upto - self._base + 1
        if count <= 0:
            return
        runs, self._runs = self._runs[:count], self._runs[count:]
        self._base += count
        self.held -= sum(len(run.params) for run in runs)
        self._sending = True
        try:
            for run in runs:
                self.conn.execute(run.stmt, run.params)
                self.sent_statements += 1
        finally:
            self._sending = False

    def _before_execute(self, conn: sa.Connection, stmt: Any, *args: Any, **kw: Any) -> None:
        if not self._runs or self._sending:
            return
        if type(stmt) is Insert and stmt.select is None:
            return  # a plain INSERT ... VALUES (see the module's docstring)
        if isinstance(stmt, sa.Select):
            tables = _read_tables(stmt)
            if tables is not None:
                last = max((self._last.get(t, -1) for t in tables), default=-1)
                if last >= self._base:
                    self.flush(upto=last)
                return
        self.flush()


def _read_tables(stmt: sa.Select[Any]) -> set[str] | None:
    """The names of the tables a SELECT reads, or None when that cannot be told (SQL text)."""
    names: set[str] = set()
    for element in visitors.iterate(stmt):
        if isinstance(element, sa.Table):
            names.add(element.name)
        elif isinstance(element, sa.TextClause):
            return None
    return names or None


def update(
    conn: sa.Connection,
    writes: WriteBehind | None,
    stmt: Any,
    params: dict[str, Any],
    tables: tuple[sa.Table, ...],
) -> None:
    """Run an UPDATE now, or hold it back when the batch has a write-behind."""
    if writes is None:
        conn.execute(stmt, params)
    else:
        writes.update(stmt, params, tables)
