"""Every difference between SQLite and PostgreSQL, in one object per backend.

The rest of the store asks ``dialect_of(conn)`` instead of comparing dialect names: how to
insert-or-ignore and upsert, how to lock a row without waiting, how to bound a lock wait,
what the database's clock reads, how a payload's size is measured, how a time becomes epoch
seconds and a JSON list becomes rows (the dashboard's charts), whether a WITH clause
may write (data-modifying CTEs), how writers are serialised (advisory locks), how workers
are woken (PostgreSQL NOTIFY; SQLite has no channel, so workers poll), and which errors are
transient (the database's trouble, never a task's).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, ClassVar, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from syncbus.errors import LeaseLostError
from syncbus.store.db import AUTOCOMMIT_READS

# PostgreSQL: logging a task NOTIFYs this channel (payload: the connector's name); the
# dispatcher LISTENs on it to wake up.
NOTIFY_CHANNEL = "syncbus_tasks"


class Dialect:
    """What the store needs to know about a backend. One instance per backend."""

    name: ClassVar[str]
    # True when logging a task wakes the workers (LISTEN/NOTIFY); else they poll.
    notifies: ClassVar[bool] = False
    # True when a WITH clause may hold an INSERT/UPDATE/DELETE (a data-modifying CTE), so two
    # writes can go in one statement; SQLite has no DML in WITH.
    dml_in_cte: ClassVar[bool] = False
    # True when transactions lock rows (SELECT ... FOR UPDATE SKIP LOCKED), so several runs
    # can share one ENTITY connector lane by lane; SQLite locks the whole database.
    row_locks: ClassVar[bool] = False
    # True when the driver sends an ``executemany`` in pipeline mode (psycopg 3), after which
    # the server does not arm ``idle_in_transaction_session_timeout`` (checked with psycopg
    # 3.3.9 on PostgreSQL 15): a worker frozen right after one would hold its batch's locks for
    # ever instead of being ended after its lease. The hot path then sends grouped writes as
    # single statements instead: multi-row UPDATEs (``syncbus.content.writes``) and history
    # records from one JSON document (``syncbus.store.history``).
    pipelined_executemany: ClassVar[bool] = False
    # True when the database's JSON parser refuses the escape of a NUL character (``\u0000``:
    # PostgreSQL, whose text cannot hold one), wherever it is in a document.
    json_refuses_nul: ClassVar[bool] = False
    # True when an id ``reserve_ids`` gave stays one no other row takes after the transaction
    # ends, committed or not (a sequence's value): a process may keep those it did not use.
    reserved_ids_outlive: ClassVar[bool] = False
    # True when the query planner keeps statistics of a table that go stale as a load fills
    # it (``refresh_planner``; ``syncbus.content.planner``).
    planner_statistics: ClassVar[bool] = False
    _insert: ClassVar[Any]

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that knows ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
        return self._insert(table)

    def insert_ignore(self, conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> None:
        """INSERT ... ON CONFLICT DO NOTHING."""
        conn.execute(self.insert(table).values(values).on_conflict_do_nothing())

    def upsert(
        self, conn: sa.Connection, table: sa.Table, values: dict[str, Any], keys: list[str]
    ) -> None:
        stmt = self.insert(table).values(values)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=keys,
                set_={k: stmt.excluded[k] for k in values if k not in keys},
            )
        )

    def now_epoch(self) -> sa.ColumnElement[float]:
        """The database's clock as seconds since the epoch (leases use it, not the workers')."""
        raise NotImplementedError

    def byte_length(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        """The stored size of a text column in bytes."""
        raise NotImplementedError

    def epoch_seconds(self, value: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        """A timestamp column (or an ISO 8601 text with its offset) as whole seconds since the
        epoch, rounded down: integer arithmetic on it buckets times exactly (the charts)."""
        raise NotImplementedError

    def json_entries(
        self, column: sa.ColumnElement[Any]
    ) -> tuple[sa.TableValuedAlias, sa.ColumnElement[str]]:
        """The entries of a JSON list of lists held in a text column, as a table function to
        join (each entry a row), and the first item of an entry as text."""
        raise NotImplementedError

    def json_rows(
        self, document: sa.ColumnElement[Any], columns: dict[str, sa.types.TypeEngine[Any] | None]
    ) -> tuple[sa.FromClause, dict[str, sa.ColumnElement[Any]]]:
        """The rows of ``document``, a JSON list of objects (a whole batch in one parameter:
        the driver passes one string and the database parses it, where a parameter per value
        would cost Python work per value): the FROM clause, and each object's value under
        each key in ``columns`` as a column of the type given there; a key typed None gives
        the JSON text of its value (an object or a list), NULL for null or a missing key."""
        raise NotImplementedError

    def one_of(self, column: Any, values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """``column IN (values)``; ``column`` may be a ``tuple_`` of columns, ``values`` then
        tuples of as many values."""
        return cast(sa.ColumnElement[bool], column.in_(values))

    def any_of(self, column: Any, name: str) -> sa.ColumnElement[bool]:
        """``column IN (...)`` of values given when the statement runs (``any_of_args``):
        the statement's text does not depend on the values, so it is built once (``prebuilt``)
        instead of per batch. ``column`` may be a ``tuple_`` of columns."""
        return cast(sa.ColumnElement[bool], column.in_(sa.bindparam(name, expanding=True)))

    def any_of_args(self, column: Any, name: str, values: Sequence[Any]) -> dict[str, Any]:
        """The parameters of ``any_of(column, name)`` for ``values`` (tuples for a tuple)."""
        return {name: list(values)}

    def lock_nowait(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        """Lock the selected rows, failing at once (a lock-wait error) if another holds one.
        SQLite locks the whole database for a writer: the statement is left as it is."""
        return stmt

    def skip_locked(self, stmt: sa.Select[Any]) -> sa.Select[Any] | None:
        """Lock the selected rows, leaving out those another transaction holds; None where
        row locks do not exist (SQLite: a writer holds the whole database)."""
        return None

    def bound_lock_wait(self, conn: sa.Connection, ms: int) -> None:
        """Let this transaction's statements wait at most ``ms`` for a lock."""

    def bound_statement_time(self, conn: sa.Connection, ms: int) -> None:
        """Let this transaction's statements run at most ``ms`` (where the backend can)."""

    def serialize(self, conn: sa.Connection, key: int) -> None:
        """Hold a lock on ``key`` until the transaction ends (SQLite: the write lock that
        BEGIN IMMEDIATE took already serialises writers)."""

    def notify(self, conn: sa.Connection, payload: str) -> None:
        """Wake listening workers when the transaction commits (where the backend can)."""

    def xact_lock(self, space: int, key: sa.ColumnElement[int]) -> sa.ColumnElement[Any] | None:
        """An expression that, selected, holds the lock ``(space, key)`` until the transaction
        ends; None where the write lock BEGIN IMMEDIATE took serialises writers already."""
        return None

    def notify_expr(self, payload: sa.ColumnElement[str]) -> sa.ColumnElement[Any] | None:
        """An expression that, selected, does what ``notify`` does; None where workers poll."""
        return None

    def hold_keys(self, conn: sa.Connection, shared: list[int], exclusive: list[int]) -> None:
        """Hold these 64-bit lock keys until the transaction ends, the ``shared`` ones shared,
        then the ``exclusive`` ones, each in ascending order, where writers can overlap;
        SQLite's single writer (BEGIN IMMEDIATE) needs none."""
        return None

    def returning_ids(self, stmt: sa.Insert, column: sa.Column[int]) -> sa.Insert:
        """A multi-row INSERT returning the new ids, which ascend in the rows' order (sort
        them to match the rows). SQLite: AUTOINCREMENT under the write lock numbers the rows
        in VALUES order; asking for the order would make SQLAlchemy insert row by row."""
        return stmt.returning(column)

    def reserve_ids(
        self, conn: sa.Connection, table: sa.Table, column: str, count: int, after: int | None
    ) -> Sequence[int] | None:
        """Ids for ``count`` new rows of ``table`` that this transaction inserts itself, with
        the ids given (a batch's held-back INSERTs, ``syncbus.content.writes``): each is one
        the table's own numbering would never hand out to another row. ``after``: the last id
        this transaction reserved for the table since it last let the table number a row
        (None: none). None when the table's ids cannot be reserved (a column the database
        numbers itself and refuses to be given, no numbering known): insert with RETURNING.

        SQLite: the ids after the table's largest (or ``after``): the write lock that BEGIN
        IMMEDIATE took keeps every other writer out until the commit, and a row the
        transaction inserts without an id is numbered after the largest, so the caller asks
        again (``after`` None) once it has let one in. Not for AUTOINCREMENT tables, which
        never hand out an id again."""
        raise NotImplementedError

    def planner_rows(self, conn: sa.Connection, table: sa.Table) -> float | None:
        """How many rows the query planner believes ``table`` holds (0 for a table it has
        no statistics of), or None where the planner keeps no statistics to refresh."""
        return None

    def refresh_planner(self, conn: sa.Connection, table: sa.Table) -> float | None:
        """Refresh the planner's statistics of ``table`` (it grew): the plans it made for
        an almost empty table (a scan, kept by prepared statements) are made again. Returns
        ``planner_rows`` after it."""
        return None

    def reads_without_transaction(self, conn: sa.Connection, on: bool) -> None:
        """Switch the connection to single-statement reads outside any transaction (the
        checks before logging), and back. Call ``conn.rollback()`` before switching back."""

    def unindexed(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """``column`` as an expression that no index of it serves, where a planner without
        statistics would take the wrong index for a read (SQLite: an equality on the queue
        index's connector, or its id order, beats a partial or lane index that holds just
        the rows asked for); the column itself where the planner weighs statistics."""
        return column

    def is_lock_wait(self, exc: BaseException) -> bool:
        """The statement gave up waiting for a lock."""
        raise NotImplementedError

    def is_transient(self, exc: BaseException) -> bool:
        """An error of the database, not of the task being applied."""
        raise NotImplementedError


class SQLiteDialect(Dialect):
    name = "sqlite"
    _insert = staticmethod(sqlite.insert)
    _TRANSIENT = ("locked", "busy", "disk i/o")

    def now_epoch(self) -> sa.ColumnElement[float]:
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)

    def byte_length(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        return sa.func.length(sa.cast(column, sa.LargeBinary))

    def epoch_seconds(self, value: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        # strftime('%s') is exact (julianday arithmetic is not) and older than unixepoch().
        return sa.cast(sa.func.strftime("%s", value), sa.Integer)

    def json_entries(
        self, column: sa.ColumnElement[Any]
    ) -> tuple[sa.TableValuedAlias, sa.ColumnElement[str]]:
        entries = sa.func.json_each(column).table_valued("value")
        return entries, sa.func.json_extract(entries.c.value, "$[0]")

    def json_rows(
        self, document: sa.ColumnElement[Any], columns: dict[str, sa.types.TypeEngine[Any] | None]
    ) -> tuple[sa.FromClause, dict[str, sa.ColumnElement[Any]]]:
        # json_extract gives an object or a list as its (minified) JSON text.
        rows = sa.func.json_each(document).table_valued("value", name="given")
        return rows, {
            key: sa.func.json_extract(rows.c.value, f"$.{key}", type_=kind or sa.Text)
            for key, kind in columns.items()
        }

    def reserve_ids(
        self, conn: sa.Connection, table: sa.Table, column: str, count: int, after: int | None
    ) -> Sequence[int] | None:
        if after is None:
            declared = (
                sa.select(sa.column("sql"))
                .select_from(sa.table("sqlite_master"))
                .where(sa.column("type") == "table", sa.column("name") == table.name)
                .scalar_subquery()
            )
            largest, ddl = conn.execute(sa.select(sa.func.max(table.c[column]), declared)).one()
            if ddl is None or "AUTOINCREMENT" in str(ddl).upper():
                return None
            after = int(largest or 0)
        return range(after + 1, after + 1 + count)

    def reads_without_transaction(self, conn: sa.Connection, on: bool) -> None:
        conn.execution_options(**{AUTOCOMMIT_READS: on})

    def unindexed(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return column + 0  # SQLite's idiom (as unary +): the column no longer picks an index

    def is_lock_wait(self, exc: BaseException) -> bool:
        text = str(getattr(exc, "orig", exc)).lower()
        return "locked" in text or "busy" in text

    def is_transient(self, exc: BaseException) -> bool:
        # SQLite also says OperationalError for "no such table": that one is the task's.
        text = str(getattr(exc, "orig", exc)).lower()
        return any(word in text for word in self._TRANSIENT)


class PostgresDialect(Dialect):
    name = "postgresql"
    notifies = True
    dml_in_cte = True
    row_locks = True
    pipelined_executemany = True
    json_refuses_nul = True
    reserved_ids_outlive = True
    planner_statistics = True
    _insert = staticmethod(postgresql.insert)
    _LOCK_NOT_AVAILABLE = "55P03"
    # Connection trouble, rollbacks (deadlock, serialization), resources (disk full),
    # operator intervention (shutdown, cancel), system errors; a lock or idle timeout. Not
    # "program limit exceeded" (a value too big for an index): that one is the task's.
    _TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
    _TRANSIENT_STATES = frozenset({_LOCK_NOT_AVAILABLE, "25P03"})

    def now_epoch(self) -> sa.ColumnElement[float]:
        return sa.literal_column("extract(epoch from clock_timestamp())", sa.Float)

    def byte_length(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        return sa.func.octet_length(column)

    def epoch_seconds(self, value: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        if not isinstance(value.type, sa.DateTime):
            value = sa.cast(value, sa.DateTime(timezone=True))
        return sa.cast(sa.func.floor(sa.extract("epoch", value)), sa.BigInteger)

    def json_entries(
        self, column: sa.ColumnElement[Any]
    ) -> tuple[sa.TableValuedAlias, sa.ColumnElement[str]]:
        entries = sa.func.json_array_elements(sa.cast(column, postgresql.JSON))
        alias = entries.table_valued("value")
        return alias, alias.c.value.op("->>")(sa.literal_column("0"))

    def json_rows(
        self, document: sa.ColumnElement[Any], columns: dict[str, sa.types.TypeEngine[Any] | None]
    ) -> tuple[sa.FromClause, dict[str, sa.ColumnElement[Any]]]:
        # A ``json`` value keeps its text as given: the nested JSON is stored as it was sent.
        typed = [sa.column(key, kind or postgresql.JSON) for key, kind in columns.items()]
        rows = (
            sa.func.json_to_recordset(sa.cast(document, postgresql.JSON))
            .table_valued(*typed)
            .render_derived(name="given", with_types=True)
        )
        return rows, {
            key: rows.c[key] if kind is not None else sa.cast(rows.c[key], sa.Text)
            for key, kind in columns.items()
        }

    def one_of(self, column: Any, values: Sequence[Any]) -> sa.ColumnElement[bool]:
        # An array parameter per column instead of a parameter per value: the statement's
        # text is the same whatever the count, so psycopg converts it once (it parses any
        # statement of over 50 parameters afresh) and the server prepares it, where an IN list
        # was parsed and planned on every batch. Measured here, 200 keys a statement:
        # integers 1.2 ms against 2.6, names 1.5 ms against 8.
        if isinstance(column, sa.Tuple):
            columns = list(column.clauses)
            arrays = [
                sa.bindparam(None, [v[i] for v in values], type_=postgresql.ARRAY(c.type))
                for i, c in enumerate(columns)
            ]
            names = [f"v{i}" for i in range(len(columns))]
            rows = sa.func.unnest(*arrays).table_valued(*names).render_derived()
            return cast(sa.ColumnElement[bool], column.in_(sa.select(rows)))
        array = sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        return cast(sa.ColumnElement[bool], column == sa.any_(array))

    def any_of(self, column: Any, name: str) -> sa.ColumnElement[bool]:
        # As ``one_of``: an array parameter per column.
        if isinstance(column, sa.Tuple):
            arrays = [
                sa.bindparam(f"{name}_{i}", type_=postgresql.ARRAY(c.type))
                for i, c in enumerate(column.clauses)
            ]
            names = [f"v{i}" for i in range(len(arrays))]
            rows = sa.func.unnest(*arrays).table_valued(*names).render_derived()
            return cast(sa.ColumnElement[bool], column.in_(sa.select(rows)))
        array = sa.bindparam(name, type_=postgresql.ARRAY(column.type))
        return cast(sa.ColumnElement[bool], column == sa.any_(array))

    def any_of_args(self, column: Any, name: str, values: Sequence[Any]) -> dict[str, Any]:
        if isinstance(column, sa.Tuple):
            count = len(column.clauses)
            return {f"{name}_{i}": [v[i] for v in values] for i in range(count)}
        return {name: list(values)}

    def lock_nowait(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        return stmt.with_for_update(nowait=True)

    def skip_locked(self, stmt: sa.Select[Any]) -> sa.Select[Any] | None:
        return stmt.with_for_update(skip_locked=True)

    def bound_lock_wait(self, conn: sa.Connection, ms: int) -> None:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(ms)}")

    def bound_statement_time(self, conn: sa.Connection, ms: int) -> None:
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(ms)}")

    def serialize(self, conn: sa.Connection, key: int) -> None:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def notify(self, conn: sa.Connection, payload: str) -> None:
        conn.execute(_PG_NOTIFY, {"channel": NOTIFY_CHANNEL, "payload": payload})

    def xact_lock(self, space: int, key: sa.ColumnElement[int]) -> sa.ColumnElement[Any] | None:
        return sa.func.pg_advisory_xact_lock(space, key)

    def notify_expr(self, payload: sa.ColumnElement[str]) -> sa.ColumnElement[Any] | None:
        return sa.func.pg_notify(NOTIFY_CHANNEL, payload)

    # One statement takes them all, in order: the branches of a UNION ALL run one after the
    # other, a function scan yields its rows in the array's order, and the aggregate calls the
    # lock function row by row. Sorted keys: two transactions never take two keys in opposite
    # orders.
    _HOLD = sa.text(
        "SELECT count(pg_advisory_xact_lock_shared(k)) FROM unnest(CAST(:shared AS bigint[])) k"
        " UNION ALL "
        "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:exclusive AS bigint[])) k"
    )

    def hold_keys(self, conn: sa.Connection, shared: list[int], exclusive: list[int]) -> None:
        if shared or exclusive:
            params = {"shared": sorted(shared), "exclusive": sorted(exclusive)}
            conn.execute(self._HOLD, params).all()

    def returning_ids(self, stmt: sa.Insert, column: sa.Column[int]) -> sa.Insert:
        # One INSERT ... SELECT ... ORDER BY: the sequence draws the ids in the rows' order.
        return stmt.returning(column, sort_by_parameter_order=True)

    _PLANNER_ROWS = sa.text(
        "SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = to_regclass(:t)"
    )

    def planner_rows(self, conn: sa.Connection, table: sa.Table) -> float | None:
        name = conn.dialect.identifier_preparer.format_table(table)
        found = conn.execute(self._PLANNER_ROWS, {"t": name}).scalar()
        return None if found is None else float(found)

    def refresh_planner(self, conn: sa.Connection, table: sa.Table) -> float | None:
        # ANALYZE takes a lock that reads and writes do not wait for; it waits for another
        # ANALYZE or VACUUM of the table (autovacuum's), which a lock timeout bounds.
        self.bound_lock_wait(conn, 1000)
        conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.format_table(table)}")
        return self.planner_rows(conn, table)

    # The column's own sequence (serial, or an identity that takes a given value), read
    # ``count`` times in one statement; no rows when there is none to read.
    _RESERVE = sa.text(
        "SELECT nextval(s.seq) FROM (SELECT pg_get_serial_sequence(:t, :c) AS seq "
        "WHERE NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(:t) "
        "AND attname = :c AND attidentity = 'a')) AS s, generate_series(1, :n) "
        "WHERE s.seq IS NOT NULL"
    )

    def reserve_ids(
        self, conn: sa.Connection, table: sa.Table, column: str, count: int, after: int | None
    ) -> Sequence[int] | None:
        # Sequences are never rolled back and never hand a value out twice: ``after`` does
        # not matter, and a row inserted without an id takes the sequence's next one.
        name = conn.dialect.identifier_preparer.format_table(table)
        ids = conn.execute(self._RESERVE, {"t": name, "c": column, "n": count}).scalars().all()
        return [int(i) for i in ids] or None

    def reads_without_transaction(self, conn: sa.Connection, on: bool) -> None:
        level = "AUTOCOMMIT" if on else conn.default_isolation_level
        conn.execution_options(isolation_level=level)

    def is_lock_wait(self, exc: BaseException) -> bool:
        return getattr(getattr(exc, "orig", None), "sqlstate", None) == self._LOCK_NOT_AVAILABLE

    def is_transient(self, exc: BaseException) -> bool:
        sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
        if sqlstate is None:  # psycopg: no server answer at all (a connection failure)
            return True
        return sqlstate[:2] in self._TRANSIENT_CLASSES or sqlstate in self._TRANSIENT_STATES


_PG_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")
SQLITE = SQLiteDialect()
POSTGRES = PostgresDialect()
_BY_NAME: dict[str, Dialect] = {SQLITE.name: SQLITE, POSTGRES.name: POSTGRES}


def dialect_of(bind: sa.Engine | sa.Connection) -> Dialect:
    return _BY_NAME[bind.dialect.name]


_Built = TypeVar("_Built")
_PREBUILT = "syncbus.prebuilt"  # the key of a table's statements in its ``info``


def prebuilt(table: sa.Table, key: Hashable, build: Callable[[], _Built]) -> _Built:
    """A statement about ``table`` built once, kept with the table (``table.info``) under
    ``key`` (which names the backend when the statement differs by backend): building a
    statement and its cache key costs more than running a small one on SQLite."""
    cache: dict[Hashable, Any] | None = table.info.get(_PREBUILT)
    if cache is None:
        cache = table.info[_PREBUILT] = {}
    found = cache.get(key)
    if found is None:
        found = cache[key] = build()
    return cast(_Built, found)


def _dialect_of_error(exc: sa.exc.DBAPIError) -> Dialect:
    module = type(exc.orig).__module__ if exc.orig is not None else ""
    return SQLITE if module.startswith("sqlite3") else POSTGRES


def is_lock_wait(exc: BaseException) -> bool:
    """The statement gave up waiting for a lock (PostgreSQL lock_timeout/NOWAIT; SQLite's
    busy timeout on the write lock)."""
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    return _dialect_of_error(exc).is_lock_wait(exc)


def is_statement_timeout(exc: BaseException) -> bool:
    """The database cancelled a statement that ran past the transaction's statement timeout
    (``Dialect.bound_statement_time``; PostgreSQL only)."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == "57014" and "statement timeout" in str(orig)


def is_transient(exc: BaseException) -> bool:
    """An error of the database or the run, not of the task: a lock timeout, a deadlock, a
    serialization failure, a lost connection, a lost lease. Never a task's failure."""
    if isinstance(exc, LeaseLostError):
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, sa.exc.InterfaceError):
        return True
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    return _dialect_of_error(exc).is_transient(exc)
