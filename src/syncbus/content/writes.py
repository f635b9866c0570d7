"""Write-behind for a batch's writes: UPDATEs (and INSERTs of new rows, below) held back and
sent grouped instead of a statement per task. How a group of updates goes depends on the
dialect (``Dialect.pipelined_executemany``):

* SQLite: one ``executemany`` per statement and column set (sqlite3 loops in C);
* PostgreSQL: multi-row ``UPDATE ... FROM`` statements of at most ``_MAX_ROWS`` rows, each a
  single plain statement: ``FROM json_to_recordset(<one JSON document>)`` where every column's
  type and every value is known to come back from JSON as psycopg would bind it
  (``_by_json``), else ``FROM unnest(<one array parameter per column>)`` where every column's
  type is known to take it (``_by_arrays``), else ``FROM (<typed UNION of rows>)``
  (``_multirow``). Not ``executemany``: psycopg sends that in pipeline mode, after which the server
  leaves its idle-in-transaction timeout unarmed (psycopg 3.3.9, PostgreSQL 15), and a worker
  frozen right after it would hold its batch's locks for ever instead of being ended after its
  lease. Runs it cannot send that way (a statement with a WITH clause, one that could change a
  unique column) go one plain ``execute`` per update.

Only the optimistic pass of a batch uses it (``Processor._apply_once``): any error there sends
the whole batch down the careful way, task by task, so an error raised when the held-back updates
are sent is handled exactly like one raised by the task that wrote them.

It holds INSERTs of new rows too (``WriteBehind.allocate`` and ``insert``): the row's id is
reserved in advance (``Dialect.reserve_ids``: on SQLite the ids after the table's largest, which
the write lock keeps for this transaction; on PostgreSQL values of the column's sequence, read in
blocks and kept across batches by an ``IdPool``), so the task knows it at once, and the inserts
go as one ``executemany`` per run (SQLite) or, on PostgreSQL, as ``INSERT ... SELECT ... FROM
json_to_recordset(<one JSON document>)`` where every value can go that way, else multi-row
``INSERT ... VALUES`` (``_send_inserts``; plain statements either way). Their order:

* a row goes after the rows its foreign keys may point at: an insert joins an open run only if
  no later run inserted into its table or a table its foreign keys name; an update likewise
  for the foreign keys it sets (other than ``fixed``), and it never joins a run held before the
  run that inserted its row;
* a new row may go before updates of its table held after its run: it is none of their rows
  (a unique conflict it then meets sends the batch the careful way, which is correct);
* a read sends, with the runs it needs, the earlier runs that inserted rows they point at;
* a DELETE treats insert runs as runs it cannot read: those of the tables it can reach go first.
* a plain INSERT made now (a row that got no reserved id) sends the held rows of its table and of
  the tables it points at first, and on SQLite the table's ids are reserved again after it,
  since it takes the id after the table's largest.

What a held-back update changes must be invisible until it is sent, so the statements that
could tell first send what is held (a ``before_execute`` listener on the connection; the caller
sends the rest before the queue's bookkeeping). Each sends the runs of held updates it could
tell, and, to keep each table's order, every run held before one of those that writes a table
one of them writes (so a SELECT of one table leaves another table's updates held):

* a SELECT: the tables it reads;
* a plain INSERT ... VALUES: nothing of the updates. Run before updates made earlier it can only
  meet a unique conflict they would have removed (the batch then goes the careful way), never
  escape one, and it neither creates nor removes a row an earlier update needs (held inserts:
  see above);
* a DELETE of one row by primary key: the runs it could tell from the updates one by one.
  Sent after it, a held update of a row it removes (itself, or through an ON DELETE CASCADE
  chain) would match nothing, and so could not fail as it would have; a run that sets a
  unique column (not ``fixed``) of a table the delete can change could escape a conflict
  with the row that went. Those runs go first; every other held update changes nothing the
  delete sees (its foreign keys are set to NULL by the cascade either way, or point at the
  deleted row and fail: the batch then goes the careful way);
* any other DELETE (whose cascades could reach any table), an upsert, an UPDATE sent now,
  SQL text, anything else: everything.

Held-back updates keep their order within each table; updates of different tables may be sent
in another order than they were made. That is invisible to the batch: an UPDATE by primary key
that leaves the key alone neither creates nor removes a row another table's foreign key could
need, and a unique or check constraint sees only its own table. (A database trigger that reads
another table could tell; the content tables have none.)

A multi-row UPDATE (PostgreSQL) does what its updates one by one would:

* types: as a JSON document, each column typed as the array form types it (the same
  assignment checks follow), and only values whose JSON text that type reads back as the
  value itself (a ``str`` for a text, an ``int`` for an integer, a ``datetime`` with a zone
  only where the column keeps zones, no NUL character, no JSON column: JSON null and SQL NULL
  would blur); as arrays, each cast to its column's type without length or precision (the
  assignment then checks those as a single-row UPDATE does), one-dimensional (a JSON list stays
  one value; a chunk holding a list where a column takes a scalar goes the UNION way, which
  refuses it). In the UNION form the rows come as ``SELECT <the table's own columns> WHERE
  false UNION ALL SELECT <row 1> UNION ALL ...``; the first branch gives each column its own
  type, so every parameter (cast as in a single-row UPDATE, or untyped, NULL included)
  resolves to it, and the assignment then refuses a value exactly as a single-row UPDATE
  would (too long, out of range; no explicit cast that could truncate);
* one source row per target: given two rows for one target, PostgreSQL applies one of them,
  unpredictably; so a run goes in layers, the n-th update of each object in the n-th (a burst
  of ten updates of each of twenty objects: ten statements, not two hundred);
* order: the rows of one statement are applied in an order of the database's choosing, which
  only a constraint across rows could tell: a unique one. A run that sets a column under a
  unique constraint or index goes row by row unless the caller says its values are the row's
  own (``fixed``: the identity the row was found by). Check constraints see one row; foreign
  keys point at primary keys, which an update here never changes, or at unique columns,
  which such a run does not set.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.dml import Delete, Insert, Update

from syncbus.store.dialect import dialect_of

# Rows per multi-row UPDATE: a run is sent in statements of at most this many rows, each padded
# with key-less rows to a power of two, so few statement shapes are compiled (and cached).
_MAX_ROWS = 128
# Ids reserved at once for new rows of a table (``WriteBehind.allocate``): where reserved ids
# stay unused across transactions (``IdPool``), a first block, then blocks twice as large up to
# the last; else (SQLite, where a reservation costs no more for more ids) the last at once.
_FIRST_BLOCK, _MAX_BLOCK = 16, 1024


class IdPool:
    """Ids reserved for new rows and not used yet, by table, kept from batch to batch where
    the database never hands a reserved id out again (``Dialect.reserved_ids_outlive``:
    PostgreSQL's sequences), so a batch rarely reserves any. Shared by the runs of a process,
    on several threads. A process that stops leaves its ids unused: gaps, as sequences leave."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free: dict[str, list[int]] = {}
        self.blocks: dict[str, int] = {}


class _Run:
    """Consecutive updates (within their tables) with one statement and one set of columns,
    or inserts of new rows into one table with one set of columns (``inserts``)."""

    __slots__ = ("fixed", "inserts", "names", "params", "parents", "stmt", "tables")

    def __init__(
        self,
        stmt: Any,
        params: dict[str, Any],
        fixed: frozenset[str],
        tables: tuple[sa.Table, ...],
        parents: frozenset[str] = frozenset(),
        inserts: bool = False,
    ) -> None:
        self.stmt = stmt
        self.params = [params]
        self.fixed = fixed
        self.tables = tables
        self.names = frozenset(t.name for t in tables)
        # The tables whose rows the run's foreign keys may point at, among those it sets:
        # rows inserted there before the run must be sent before it.
        self.parents = parents
        self.inserts = inserts


class WriteBehind:
    """A batch's held-back UPDATEs on one connection; use as a context manager around the
    optimistic pass (it listens to the connection while open). The listener sees what goes
    through ``Connection.execute``, not ``exec_driver_sql``: call ``flush()`` before driver
    SQL that could read what is held (the engine does, before the history records)."""

    def __init__(
        self, conn: sa.Connection, pool: IdPool | None = None, graph: TableGraph | None = None
    ) -> None:
        """``pool``: the ids reserved and left unused by earlier batches, where they stay
        unused (``IdPool``); else each batch reserves its own. ``graph``: the foreign keys
        among every table the batch can write (``TypeRegistry.table_graph``: a type registered
        later has its table in another MetaData than the built-in ones); else those of the
        MetaData of the table a DELETE names."""
        self.conn = conn
        self._graph = graph
        # Send runs as multi-row UPDATEs, else one executemany each (see the module's docstring).
        self.multirow = dialect_of(conn).pipelined_executemany
        self.held = 0  # updates held and not sent yet
        self.sent_statements = 0  # executemany calls made
        # The runs held, by number (in the order they were made; a run leaves when it is sent).
        self._runs: dict[int, _Run] = {}
        self._next = 0  # the next run's number
        self._open: dict[tuple[int, tuple[str, ...]], int] = {}  # (stmt, columns): run number
        self._last: dict[str, int] = {}  # table name: number of the last run that writes it
        self._last_update: dict[str, int] = {}  # table name: the last run that updates it
        self._last_insert: dict[str, int] = {}  # table name: the last run that inserts into it
        self._newest_insert = -1  # the number of the last insert run made
        # Rows inserted while held: table name: {primary key: number of the run}.
        self._inserted: dict[str, dict[Any, int]] = {}
        # Ids reserved and not handed out yet, by table (``allocate``), the last one reserved,
        # and the tables whose ids cannot be reserved.
        dialect = dialect_of(conn)
        self._pool = pool if pool is not None and dialect.reserved_ids_outlive else None
        self._ids: dict[str, list[int]] = {}  # this batch's own (no pool)
        self._reserved: dict[str, int] = {}
        self._no_ids: set[str] = set()
        self.inserted: dict[sa.Table, int] = {}  # rows held (and sent) for insertion, by table
        self._sending = False

    def __enter__(self) -> WriteBehind:
        sa.event.listen(self.conn, "before_execute", self._before_execute)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.conn, "before_execute", self._before_execute)
        if exc[0] is None:
            self.flush()

    def update(
        self,
        stmt: Any,
        params: dict[str, Any],
        tables: tuple[sa.Table, ...],
        fixed: frozenset[str] = frozenset(),
    ) -> None:
        """Hold back ``conn.execute(stmt, params)``, an UPDATE by primary key that writes
        ``tables`` and whose result nobody reads. ``fixed``: columns it sets to the values the
        row already has (the identity it was found by), the same for every update of ``stmt``."""
        columns = tuple(params)
        key = (id(stmt), columns)
        number = self._open.get(key)
        # Join the open run of this statement only if no later run updates one of its tables
        # (the order of a table's updates stays the order the tasks wrote in), and no later
        # run inserted the row or a row its new foreign keys may point at.
        if (
            number is not None
            and number in self._runs
            and all(self._last_update.get(t.name) == number for t in tables)
            and (self._newest_insert < number or self._after_inserts(number, stmt, params, fixed))
        ):
            self._runs[number].params.append(params)
        else:
            number = self._next
            self._next += 1
            parents = _set_parents(stmt, columns, fixed) if len(tables) == 1 else frozenset()
            self._runs[number] = _Run(stmt, params, fixed, tables, parents)
            self._open[key] = number
            for t in tables:
                self._last[t.name] = self._last_update[t.name] = number
        self.held += 1

    def _after_inserts(
        self, number: int, stmt: Any, params: dict[str, Any], fixed: frozenset[str]
    ) -> bool:
        """Whether an update may join run ``number`` although inserts are held: it updates
        no row a later run inserted, and sets no foreign key a later insert could satisfy."""
        shape = _make_shape_cached(stmt, tuple(params), fixed)
        if shape is None:
            return False  # which row it updates cannot be told
        inserted = self._inserted.get(shape.table.name)
        if inserted is not None and inserted.get(params[shape.param], -1) > number:
            return False
        return all(
            self._last_insert.get(p, -1) < number for p in _set_parents(stmt, tuple(params), fixed)
        )

    def allocate(self, table: sa.Table, column: str) -> int | None:
        """An id for a new row of ``table`` that ``insert`` will hold back, or None when the
        table's ids cannot be given in advance (insert it now, with RETURNING)."""
        name = table.name
        if name in self._no_ids or not _numbered(table, column):
            return None
        pool = self._pool
        if pool is None:
            free = self._ids.get(name)
            if not free:
                got = self._reserve(table, column, _MAX_BLOCK, self._reserved.get(name))
                if got is None:
                    return None
                free = self._ids[name] = list(reversed(got))
                self._reserved[name] = got[-1]
            return free.pop()
        with pool.lock:
            free = pool.free.get(name)
            if not free:
                count = pool.blocks.get(name, _FIRST_BLOCK)
                got = self._reserve(table, column, count, None)
                if got is None:
                    return None
                pool.blocks[name] = min(count * 2, _MAX_BLOCK)
                free = pool.free[name] = list(reversed(got))
            return free.pop()

    def _reserve(
        self, table: sa.Table, column: str, count: int, after: int | None
    ) -> Sequence[int] | None:
        self._sending = True  # the lookup may read the table: it tells nothing held
        try:
            got = dialect_of(self.conn).reserve_ids(self.conn, table, column, count, after)
        finally:
            self._sending = False
        if not got:
            self._no_ids.add(table.name)
            return None
        return got

    def insert(self, table: sa.Table, params: dict[str, Any]) -> None:
        """Hold back the INSERT of a new row of ``table`` whose primary key ``params`` give
        (an id from ``allocate``, or one of a row just inserted, as a page's fields row). It
        joins the open run of its columns unless a later run inserted into its table or one
        its foreign keys point at; it may go before updates of the table held after that run
        (a new row is none of theirs)."""
        stmt = _insert_stmt(table, self.multirow)
        columns = tuple(params)
        key = (id(stmt), columns)
        name = table.name
        parents = _insert_parents(table)
        number = self._open.get(key)
        if (
            number is not None
            and number in self._runs
            and self._last_insert.get(name) == number
            and all(self._last_insert.get(p, -1) <= number for p in parents)
        ):
            self._runs[number].params.append(params)
        else:
            number = self._next
            self._next += 1
            self._runs[number] = _Run(stmt, params, frozenset(), (table,), parents, inserts=True)
            self._open[key] = number
            self._last_insert[name] = self._newest_insert = number
        self._last[name] = max(self._last.get(name, -1), number)
        pk = _primary_key(table)
        if pk is not None:
            self._inserted.setdefault(name, {})[params.get(pk)] = number
        self.inserted[table] = self.inserted.get(table, 0) + 1
        self.held += 1

    def flush(self, wanted: Iterable[int] | None = None) -> None:
        """Send what is held, in order; with ``wanted`` (run numbers), only those runs and
        every run held before one of them that writes a table a run sent writes."""
        if wanted is None:
            runs = list(self._runs.values())
            self._runs.clear()
        else:
            runs = self._take(wanted)
        if not runs:
            return
        self.held -= sum(len(run.params) for run in runs)
        self._sending = True
        try:
            for run in runs:
                if self.multirow and run.inserts:
                    self.sent_statements += _send_inserts(self.conn, run)
                elif not self.multirow:
                    self.conn.execute(run.stmt, run.params)
                    self.sent_statements += 1
                elif len(run.params) == 1 or (shape := _shape(run)) is None:
                    for params in run.params:
                        self.conn.execute(run.stmt, params)
                        self.sent_statements += 1
                else:
                    self.sent_statements += shape.send(self.conn, run.params)
        finally:
            self._sending = False

    def _take(self, wanted: Iterable[int]) -> list[_Run]:
        """Remove and return, in order, the ``wanted`` runs still held and the earlier runs
        that must go before them: walking back from the last wanted one, a run goes when it is
        wanted or writes a table of a run that goes after it."""
        numbers = {n for n in wanted if n in self._runs}
        if not numbers:
            return []
        top, chosen = max(numbers), []
        tables: set[str] = set()
        for number in reversed(self._runs):
            if number > top:
                continue
            run = self._runs[number]
            if number in numbers or not tables.isdisjoint(run.names):
                chosen.append(number)
                tables |= run.names | run.parents
        return [self._runs.pop(number) for number in reversed(chosen)]

    def _before_execute(self, conn: sa.Connection, stmt: Any, *args: Any, **kw: Any) -> None:
        if not self._runs or self._sending:
            return
        if type(stmt) is Insert and stmt.select is None:
            # A plain INSERT ... VALUES (see the module's docstring). Rows held for its table
            # or the ones it points at go first; and it numbers its row after the table's
            # largest id, so the ids reserved for the table are asked for again.
            if self._last_insert and isinstance(stmt.table, sa.Table):
                table = stmt.table
                names = {table.name, *_insert_parents(table)}
                self._ids.pop(table.name, None)
                self._reserved.pop(table.name, None)
                if any(n in self._last_insert for n in names):
                    self.flush(self._last[n] for n in names if n in self._last)
            return
        if isinstance(stmt, sa.Select):
            tables = _read_tables(stmt)
            if tables is not None:
                self.flush(self._last[t] for t in tables if t in self._last)
                return
        if type(stmt) is Delete:
            target = _deleted_row(stmt, *args[:2])
            if target is not None:
                self.flush(self._runs_a_delete_could_tell(*target))
                return
        self.flush()

    def _runs_a_delete_could_tell(self, table: sa.Table, key: Any) -> list[int]:
        """The numbers of the held runs that must go before ``DELETE FROM table WHERE
        <primary key> = key`` (see the module's docstring)."""
        graph = self._graph if self._graph is not None else _graph_of(table.metadata)
        removed, reached = graph.reach(table.name)
        out = []
        for number, run in self._runs.items():
            if run.names.isdisjoint(reached):
                continue
            shape = _shape(run)
            if (
                shape is None  # sets a unique column (or cannot be told): could conflict
                or not run.names.isdisjoint(removed)  # rows the cascade removes: could fail
                or (shape.table is table and any(p[shape.param] == key for p in run.params))
            ):
                out.append(number)
        return out


# What each SELECT read while writes were held reads (a statement is immutable, and the
# hot path's are built once: ``syncbus.store.dialect.prebuilt``).
_READS: weakref.WeakKeyDictionary[Any, frozenset[str] | None] = weakref.WeakKeyDictionary()


def _read_tables(stmt: sa.Select[Any]) -> frozenset[str] | None:
    """The names of the tables a SELECT reads, or None when that cannot be told (SQL text)."""
    try:
        return _READS[stmt]
    except KeyError:
        pass
    names: set[str] = set()
    found: frozenset[str] | None = None
    for element in visitors.iterate(stmt):
        if isinstance(element, sa.Table):
            names.add(element.name)
        elif isinstance(element, sa.TextClause):
            break
    else:
        found = frozenset(names) or None
    _READS[stmt] = found
    return found


def update(
    conn: sa.Connection,
    writes: WriteBehind | None,
    stmt: Any,
    params: dict[str, Any],
    tables: tuple[sa.Table, ...],
    fixed: frozenset[str] = frozenset(),
) -> None:
    """Run an UPDATE now, or hold it back when the batch has a write-behind (``fixed``: see
    ``WriteBehind.update``)."""
    if writes is None:
        conn.execute(stmt, params)
    else:
        writes.update(stmt, params, tables, fixed)


class _Shape:
    """A run's UPDATE as ``table SET cols WHERE key = :param``, sent many rows at a time."""

    def __init__(self, table: sa.Table, key: sa.Column[Any], param: str, cols: list[str]) -> None:
        self.table, self.key, self.param, self.cols = table, key, param, cols
        # The array parameters whose items are scalars (all but JSON columns'; see ``_send``).
        self.scalars = ["k"]
        self.scalars += [
            f"v{j}" for j, c in enumerate(cols) if not isinstance(table.c[c].type, sa.JSON)
        ]

    def send(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> int:
        """Send ``rows``; returns the number of statements. A statement takes each row once
        (see the module's docstring), so the rows go in layers: the n-th update of each row
        in the n-th, each layer in statements of at most ``_MAX_ROWS``. Every row's updates
        keep their order; rows of one layer are applied in any order, as in one statement."""
        layers: list[list[dict[str, Any]]] = []
        seen: dict[Any, int] = {}
        for row in rows:
            key = row[self.param]
            n = seen.get(key, 0)
            seen[key] = n + 1
            if n == len(layers):
                layers.append([])
            layers[n].append(row)
        return sum(
            self._send(conn, layer[start : start + _MAX_ROWS])
            for layer in layers
            for start in range(0, len(layer), _MAX_ROWS)
        )

    def _send(self, conn: sa.Connection, chunk: list[dict[str, Any]]) -> int:
        by_json = _by_json(self.table, self.key.name, tuple(self.cols))
        if by_json is not None:
            document = by_json.document(self.param, self.cols, chunk)
            if document is not None:
                conn.execute(by_json.stmt, {"rows": document})
                return 1
        arrays = _by_arrays(self.table, self.key.name, tuple(self.cols))
        if arrays is not None:
            lists = {"k": [row[self.param] for row in chunk]}
            for j, col in enumerate(self.cols):
                lists[f"v{j}"] = [row[col] for row in chunk]
            # A list where a column takes a scalar would make the array one more dimension
            # deep, and unnest would spread its items over rows: the UNION form refuses it.
            if not any(isinstance(v, (list, tuple)) for p in self.scalars for v in lists[p]):
                conn.execute(arrays, lists)
                return 1
        size = 1 << (len(chunk) - 1).bit_length()  # padded: key NULL matches no row
        params: dict[str, Any] = {}
        for i in range(size):
            row = chunk[i] if i < len(chunk) else {}
            params[f"k{i}"] = row.get(self.param)
            for j, col in enumerate(self.cols):
                params[f"v{i}_{j}"] = row.get(col)
        conn.execute(_multirow(self.table, self.key.name, tuple(self.cols), size), params)
        return 1


def _element_type(column: sa.Column[Any]) -> Any:
    """The type an array parameter for ``column`` is cast to (``_by_arrays``), or None when
    the column's type is not one known to take it safely. Never a length or precision: an
    explicit cast to ``varchar(10)`` or ``char(3)`` would cut a value the column refuses."""
    t = column.type
    if isinstance(t, (sa.TypeDecorator, sa.ARRAY, sa.Enum)):
        return None
    if isinstance(t, sa.String):
        return sa.Text()
    if isinstance(t, (sa.Integer, sa.Boolean, sa.Date, sa.Uuid, sa.JSON)):
        return t
    if isinstance(t, sa.Float):
        return sa.Float()
    if isinstance(t, sa.Numeric):
        return sa.Numeric()
    if isinstance(t, sa.DateTime):
        return sa.DateTime(timezone=t.timezone)
    return None


# What a column's values must be, in Python, to go in a JSON document (``_by_json``): the
# kinds whose JSON text the column's input function reads back as the very value psycopg
# would have bound, by the column's element type (``_element_type``).
def _json_kind(t: Any) -> Callable[[Any], bool] | None:
    if isinstance(t, sa.JSON):
        return None  # JSON null and SQL NULL would blur: the array form keeps them apart
    if isinstance(t, sa.Text):
        return lambda v: type(v) is str
    if isinstance(t, sa.Boolean):
        return lambda v: type(v) is bool
    if isinstance(t, sa.Integer):
        return lambda v: type(v) is int and -_INT64 <= v < _INT64
    if isinstance(t, sa.Float):
        return lambda v: (type(v) is float and math.isfinite(v)) or type(v) is int
    if isinstance(t, sa.Numeric):
        return lambda v: (isinstance(v, decimal.Decimal) and v.is_finite()) or type(v) is int
    if isinstance(t, sa.DateTime):
        if t.timezone:  # an ISO text with its offset, or without one read in the session's zone
            return lambda v: isinstance(v, dt.datetime)
        return lambda v: isinstance(v, dt.datetime) and v.tzinfo is None
    if isinstance(t, sa.Date):
        return lambda v: type(v) is dt.date
    if isinstance(t, sa.Uuid):
        return lambda v: isinstance(v, uuid.UUID)
    return None


_INT64 = 2**63


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not sent in JSON")


_JSON = json.JSONEncoder(default=_json_default, separators=(",", ":"), allow_nan=False)


class _ByJson:
    """``UPDATE table SET col = r.col ... FROM json_to_recordset(:rows) AS r(k <type>, v0
    <type>, ...) WHERE table.key = r.k``: a run's rows as one JSON document, encoded by one
    call into the C encoder, where arrays cost psycopg Python work per element (a text with
    quotes more: 64 rows of a five-column update measured 1.4 to 2.1 ms a statement against
    3.3 to 3.8 ms as arrays)."""

    def __init__(self, stmt: Any, kinds: list[Callable[[Any], bool]]) -> None:
        self.stmt, self.kinds = stmt, kinds

    def document(self, param: str, cols: list[str], chunk: list[dict[str, Any]]) -> str | None:
        """The rows as the JSON document, or None when a value is not of a kind its column
        reads back exactly (the array or UNION form then sends them)."""
        keys = ["k", *(f"v{j}" for j in range(len(cols)))]
        return _json_document([param, *cols], keys, self.kinds, chunk)


def _json_document(
    names: list[str],
    keys: list[str],
    kinds: list[Callable[[Any], bool]],
    chunk: list[dict[str, Any]],
) -> str | None:
    """``chunk``'s values under ``names`` as a JSON list of objects keyed by ``keys``, or None
    when a value is not of the kind its column reads back exactly (``kinds``)."""
    rows = []
    for row in chunk:
        out = {}
        for name, key, kind in zip(names, keys, kinds, strict=True):
            value = row.get(name)
            if value is not None and not kind(value):
                return None
            out[key] = value
        rows.append(out)
    try:
        document = _JSON.encode(rows)
    except ValueError:
        return None
    # PostgreSQL refuses the escape of a NUL in a text value of a JSON document.
    return None if "\\u0000" in document else document


_JSON_STATEMENTS: dict[tuple[sa.Table, str, tuple[str, ...]], _ByJson | None] = {}


def _by_json(table: sa.Table, key: str, cols: tuple[str, ...]) -> _ByJson | None:
    """The JSON form of a run's UPDATE (``_ByJson``) when every column's type can go that
    way (else None); built once per table and columns."""
    cache_key = (table, key, cols)
    if cache_key in _JSON_STATEMENTS:
        return _JSON_STATEMENTS[cache_key]
    found = None
    types = [_element_type(table.c[c]) for c in (key, *cols)]
    kinds = [None if t is None else _json_kind(t) for t in types]
    if all(k is not None for k in kinds):
        names = ["k", *(f"v{j}" for j in range(len(cols)))]
        rows = (
            sa.func.json_to_recordset(sa.cast(sa.bindparam("rows", type_=sa.Text), postgresql.JSON))
            .table_valued(*(sa.column(n, t) for n, t in zip(names, types, strict=True)))
            .render_derived(name="syncbus_rows", with_types=True)
        )
        stmt = (
            table.update()
            .where(table.c[key] == rows.c.k)
            .values({c: rows.c[f"v{j}"] for j, c in enumerate(cols)})
        )
        found = _ByJson(stmt, [k for k in kinds if k is not None])
    if len(_JSON_STATEMENTS) > 512:
        _JSON_STATEMENTS.clear()
    _JSON_STATEMENTS[cache_key] = found
    return found


# Rows per INSERT of a held run on PostgreSQL.
_INSERT_ROWS = 1_000


def _send_inserts(conn: sa.Connection, run: _Run) -> int:
    """Send a held run of INSERTs on PostgreSQL; returns the number of statements. As
    ``INSERT INTO t (cols) SELECT ... FROM json_to_recordset(<one JSON document>)`` where every
    column's type and every value can go that way (``_InsertJson``: one short statement that
    psycopg caches, the rows encoded by one call into the C encoder), else as multi-row
    ``INSERT ... VALUES`` (SQLAlchemy's "insertmanyvalues": psycopg parses each such statement's
    long text anew). Either is a plain statement, not a pipeline."""
    table = run.tables[0]
    cols = tuple(run.params[0])
    form = _insert_json(table, cols)
    sent = 0
    for start in range(0, len(run.params), _INSERT_ROWS):
        chunk = run.params[start : start + _INSERT_ROWS]
        document = None if form is None else form.document(cols, chunk)
        if form is not None and document is not None:
            conn.execute(form.stmt, {"rows": document})
        else:
            conn.execute(run.stmt, chunk)
        sent += 1
    return sent


class _InsertJson:
    """``INSERT INTO table (cols) SELECT r.v0, ... FROM json_to_recordset(:rows) AS r(v0
    <type>, ...)``: the JSON form of ``_ByJson`` for new rows. Each column is typed as the
    array form types it, without length or precision, so the assignment to the column checks a
    value as a single-row INSERT does."""

    def __init__(self, stmt: Any, kinds: list[Callable[[Any], bool]]) -> None:
        self.stmt, self.kinds = stmt, kinds

    def document(self, cols: tuple[str, ...], chunk: list[dict[str, Any]]) -> str | None:
        """The rows as the JSON document, or None when a value is not of a kind its column
        reads back exactly."""
        keys = [f"v{j}" for j in range(len(cols))]
        return _json_document(list(cols), keys, self.kinds, chunk)


_INSERT_JSON: dict[tuple[sa.Table, tuple[str, ...]], _InsertJson | None] = {}


def _insert_json(table: sa.Table, cols: tuple[str, ...]) -> _InsertJson | None:
    """The JSON form of a run's INSERT when every column's type can go that way (else None);
    built once per table and columns."""
    cache_key = (table, cols)
    if cache_key in _INSERT_JSON:
        return _INSERT_JSON[cache_key]
    found = None
    if all(c in table.c for c in cols):
        types = [_element_type(table.c[c]) for c in cols]
        kinds = [None if t is None else _json_kind(t) for t in types]
        if all(k is not None for k in kinds):
            names = [f"v{j}" for j in range(len(cols))]
            rows = (
                sa.func.json_to_recordset(
                    sa.cast(sa.bindparam("rows", type_=sa.Text), postgresql.JSON)
                )
                .table_valued(*(sa.column(n, t) for n, t in zip(names, types, strict=True)))
                .render_derived(name="syncbus_rows", with_types=True)
            )
            stmt = table.insert().from_select(list(cols), sa.select(*(rows.c[n] for n in names)))
            found = _InsertJson(stmt, [k for k in kinds if k is not None])
    if len(_INSERT_JSON) > 512:
        _INSERT_JSON.clear()
    _INSERT_JSON[cache_key] = found
    return found


_ARRAY_STATEMENTS: dict[tuple[sa.Table, str, tuple[str, ...]], Any] = {}


def _by_arrays(table: sa.Table, key: str, cols: tuple[str, ...]) -> Any:
    """``UPDATE table SET col = v.col ... FROM unnest(:k, :v0, ...) v WHERE table.key = v.k``,
    one array parameter per column, when every column's type can go as an array (else None):
    one short statement whatever the number of rows, which psycopg caches and prepares."""
    cache_key = (table, key, cols)
    if cache_key in _ARRAY_STATEMENTS:
        return _ARRAY_STATEMENTS[cache_key]
    stmt = None
    types = [_element_type(table.c[c]) for c in (key, *cols)]
    if all(t is not None for t in types):
        names = ["k", *(f"v{j}" for j in range(len(cols)))]
        rows = (
            sa.func.unnest(
                *(
                    # One dimension: a JSON value that is a list stays one element.
                    sa.bindparam(name, type_=postgresql.ARRAY(t, dimensions=1))
                    for name, t in zip(names, types, strict=True)
                )
            )
            .table_valued(*names)
            .render_derived(name="syncbus_rows")
        )
        stmt = (
            table.update()
            .where(table.c[key] == rows.c.k)
            .values({c: rows.c[f"v{j}"] for j, c in enumerate(cols)})
        )
    if len(_ARRAY_STATEMENTS) > 512:
        _ARRAY_STATEMENTS.clear()
    _ARRAY_STATEMENTS[cache_key] = stmt
    return stmt


_STATEMENTS: dict[tuple[sa.Table, str, tuple[str, ...], int], Any] = {}


def _multirow(table: sa.Table, key: str, cols: tuple[str, ...], size: int) -> Any:
    """``UPDATE table SET col = v.col ... FROM (typed rows) v WHERE table.key = v.key`` for
    ``size`` rows with parameters ``k<i>`` (key) and ``v<i>_<j>`` (``cols[j]``); built once."""
    found = _STATEMENTS.get((table, key, cols, size))
    if found is not None:
        return found
    label = "syncbus_key"
    typed = sa.select(table.c[key].label(label), *(table.c[c] for c in cols)).where(sa.false())
    rows = [
        sa.select(
            sa.bindparam(f"k{i}", type_=table.c[key].type).label(label),
            *(
                sa.bindparam(f"v{i}_{j}", type_=table.c[c].type).label(c)
                for j, c in enumerate(cols)
            ),
        )
        for i in range(size)
    ]
    source = sa.union_all(typed, *rows).subquery("syncbus_rows")
    stmt = (
        table.update().where(table.c[key] == source.c[label]).values({c: source.c[c] for c in cols})
    )
    if len(_STATEMENTS) > 512:
        _STATEMENTS.clear()
    _STATEMENTS[(table, key, cols, size)] = stmt
    return stmt


# By (id of the statement, columns, fixed): the statement (an id can be reused once its
# object is gone) and its shape.
_SHAPES: dict[tuple[int, tuple[str, ...], frozenset[str]], tuple[Any, _Shape | None]] = {}


def _shape(run: _Run) -> _Shape | None:
    """How ``run`` can go as multi-row UPDATEs, or None when it goes row by row: a statement
    other than ``UPDATE table WHERE key = :param`` with its SET from the parameters, or one
    that sets a unique column not in ``run.fixed`` (see the module's docstring)."""
    return _make_shape_cached(run.stmt, tuple(run.params[0]), run.fixed)


def _make_shape_cached(stmt: Any, columns: tuple[str, ...], fixed: frozenset[str]) -> _Shape | None:
    cache_key = (id(stmt), columns, fixed)
    found = _SHAPES.get(cache_key)
    if found is not None and found[0] is stmt:
        return found[1]
    shape = _make_shape(stmt, columns, fixed)
    if len(_SHAPES) > 512:
        _SHAPES.clear()
    _SHAPES[cache_key] = (stmt, shape)
    return shape


_SET_PARENTS: dict[tuple[int, tuple[str, ...], frozenset[str]], tuple[Any, frozenset[str]]] = {}


def _set_parents(stmt: Any, columns: tuple[str, ...], fixed: frozenset[str]) -> frozenset[str]:
    """The tables an UPDATE's new foreign keys point at: those of the columns it sets, other
    than ``fixed`` ones (set to the values the row has: rows that exist already)."""
    cache_key = (id(stmt), columns, fixed)
    found = _SET_PARENTS.get(cache_key)
    if found is not None and found[0] is stmt:
        return found[1]
    table = getattr(stmt, "table", None)
    parents: frozenset[str] = frozenset()
    if isinstance(table, sa.Table):
        parents = frozenset(
            _target(fk) for c in columns if c in table.c and c not in fixed
            for fk in table.c[c].foreign_keys
        )  # fmt: skip
    if len(_SET_PARENTS) > 512:
        _SET_PARENTS.clear()
    _SET_PARENTS[cache_key] = (stmt, parents)
    return parents


# Per table: the INSERTs a write-behind holds (with and without RETURNING), the tables its
# foreign keys point at, its single-column primary key.
_INSERTS: dict[tuple[sa.Table, bool], Any] = {}
_PARENTS: dict[sa.Table, frozenset[str]] = {}


def _insert_stmt(table: sa.Table, returning: bool) -> Any:
    """The INSERT of a held run: with RETURNING on PostgreSQL, where SQLAlchemy then sends
    the rows as multi-row INSERTs, not an ``executemany`` (pipeline mode: see the module's
    docstring); its rows are not read."""
    stmt = _INSERTS.get((table, returning))
    if stmt is None:
        stmt = table.insert()
        if returning:
            stmt = stmt.returning(*(table.primary_key.columns or list(table.c)[:1]))
        _INSERTS[(table, returning)] = stmt
    return stmt


def _insert_parents(table: sa.Table) -> frozenset[str]:
    found = _PARENTS.get(table)
    if found is None:
        found = _PARENTS[table] = frozenset(_target(fk) for fk in table.foreign_keys)
    return found


def _primary_key(table: sa.Table) -> str | None:
    columns = table.primary_key.columns
    return next(iter(columns)).name if len(columns) == 1 else None


def _numbered(table: sa.Table, column: str) -> bool:
    """Whether ``column`` is ``table``'s single integer primary key, numbered by the
    database (its ids can then be reserved: ``Dialect.reserve_ids``)."""
    columns = table.primary_key.columns
    if len(columns) != 1:
        return False
    pk = next(iter(columns))
    return (
        pk.name == column
        and isinstance(pk.type, sa.Integer)
        and pk.autoincrement
        in (
            True,
            "auto",
        )
    )


def _make_shape(stmt: Any, columns: tuple[str, ...], fixed: frozenset[str]) -> _Shape | None:
    if type(stmt) is not Update or stmt._independent_ctes or stmt._values:
        return None
    table = stmt.table
    where = stmt.whereclause
    if not isinstance(table, sa.Table) or not isinstance(where, sa.BinaryExpression):
        return None
    key, param = where.left, where.right
    if (
        where.operator is not operators.eq
        or not isinstance(key, sa.Column)
        or key.table is not table
        or not isinstance(param, sa.BindParameter)
        or param.key not in columns
    ):
        return None
    cols = [c for c in columns if c != param.key]
    if not cols or any(c not in table.c for c in cols):
        return None
    if (set(cols) & _unique_columns(table)) - fixed:
        return None
    return _Shape(table, key, param.key, cols)


def _unique_columns(table: sa.Table) -> set[str]:
    """Columns under a primary key, unique constraint or unique index of ``table``."""
    names = {c.name for c in table.columns if c.unique or c.primary_key}
    for constraint in table.constraints:
        if isinstance(constraint, (sa.UniqueConstraint, sa.PrimaryKeyConstraint)):
            names.update(c.name for c in constraint.columns)
    for index in table.indexes:
        if index.unique:
            if any(not isinstance(e, sa.Column) for e in index.expressions):
                return set(table.c.keys())  # an expression could read any column
            names.update(c.name for c in index.columns)
    return names


def _deleted_row(stmt: Any, multiparams: Any = (), params: Any = None) -> Any:
    """``(table, key)`` of ``DELETE FROM table WHERE <single-column primary key> = :p`` run
    with one set of parameters (``before_execute``'s ``multiparams`` and ``params``), else
    None."""
    if multiparams:
        if len(multiparams) != 1 or params:
            return None
        params = multiparams[0]
    table, where = stmt.table, stmt.whereclause
    if (
        not isinstance(params, dict)
        or not isinstance(table, sa.Table)
        or stmt._independent_ctes
        or not isinstance(where, sa.BinaryExpression)
        or where.operator is not operators.eq
        or not isinstance(where.right, sa.BindParameter)
        or where.right.key not in params
        or len(table.primary_key.columns) != 1
        or next(iter(table.primary_key.columns)) is not where.left
    ):
        return None
    return table, params[where.right.key]


def _target(fk: sa.ForeignKey) -> str:
    """The name of the table a foreign key points at, read from its target's name: resolving
    it (``fk.column``) fails where that table is in another MetaData."""
    return fk.target_fullname.split(".")[-2]


class TableGraph:
    """The foreign keys among a set of tables, by table name. The bus's MetaData holds the
    built-in tables, a ``TypeRegistry``'s those of types registered later with copies of the
    built-in ones they point at: a DELETE of a built-in row can cascade into a registered
    type's table, which the built-in MetaData does not know."""

    def __init__(self, tables: Iterable[sa.Table]) -> None:
        # referenced table: {(referencing table, whether its rows go with the referenced row)}
        self._refs: dict[str, set[tuple[str, bool]]] = {}
        for table in tables:
            for fk in table.foreign_keys:
                cascade = (fk.ondelete or "").upper() == "CASCADE"
                self._refs.setdefault(_target(fk), set()).add((table.name, cascade))
        self._reach: dict[str, tuple[frozenset[str], frozenset[str]]] = {}

    def reach(self, name: str) -> tuple[frozenset[str], frozenset[str]]:
        """What deleting a row of table ``name`` can touch through foreign keys: the tables
        whose rows its ON DELETE CASCADE chains can remove, and those it can change or that
        could refuse it (``name`` itself, and every table whose foreign keys reach it)."""
        found = self._reach.get(name)
        if found is not None:
            return found
        removed: set[str] = set()
        reached = {name}
        todo = [(name, True)]
        while todo:
            target, removing = todo.pop()
            for other, cascades in self._refs.get(target, ()):
                cascade = removing and cascades
                if cascade and other not in removed:
                    removed.add(other)
                    todo.append((other, True))
                if other not in reached:
                    reached.add(other)
                    todo.append((other, cascade))
        found = self._reach[name] = (frozenset(removed), frozenset(reached))
        return found


_GRAPHS: dict[tuple[int, int], tuple[sa.MetaData, TableGraph]] = {}


def _graph_of(metadata: sa.MetaData) -> TableGraph:
    """The graph of one MetaData's tables (keyed by its number of tables too: a table added
    later can add a foreign key)."""
    key = (id(metadata), len(metadata.tables))
    found = _GRAPHS.get(key)
    if found is None or found[0] is not metadata:
        found = _GRAPHS[key] = (metadata, TableGraph(metadata.tables.values()))
    return found[1]
