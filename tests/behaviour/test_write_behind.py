"""Write-behind (``syncbus.content.writes``): the optimistic pass of a batch holds its UPDATEs
back and sends them grouped (one ``executemany`` per run on SQLite, multi-row UPDATEs on
PostgreSQL). These tests hold that nothing a
task can see or get changes with it: a read sees what earlier tasks wrote, the last write wins,
an update the database refuses fails its own task alone (the tasks before and behind it apply),
and a batch applied grouped ends exactly as the same tasks applied one per batch. On both
databases."""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncbus import IntegrationBus, InternalObject, ProcessType, TaskType
from syncbus.content import writes
from syncbus.content.writes import WriteBehind
from syncbus.payload import Payload, encode
from tests.behaviour.test_intake_hardening import HARD, item, typed_values
from tests.helpers import CONNECTOR, add_connector, log, run

UPDATE = TaskType.UPDATE_OBJECT
SKIP = ProcessType.SKIP_ON_ERROR
_n = itertools.count()


def _store_raw(bus: IntegrationBus, task_id: int, data: dict[str, Any]) -> None:
    """Write a task's object past the log-time checks (what only the database refuses)."""
    payload = Payload(obj=InternalObject("hard.item", data))
    with bus.engine.begin() as c:
        c.execute(
            sa.text("UPDATE syncbus_task SET data = :d WHERE task_id = :t"),
            {"d": encode(payload), "t": task_id},
        )


def _items(bus: IntegrationBus, names: list[str]) -> dict[str, dict[str, Any]]:
    table = bus.registry.table("hard.item")
    with bus.engine.connect() as c:
        rows = c.execute(sa.select(table).where(table.c.item_name.in_(names))).mappings()
        return {r["item_name"]: dict(r) for r in rows}


class _Updates:
    """Counts the UPDATE statements sent to a table (an executemany counts once)."""

    def __init__(self, engine: sa.Engine, table: str) -> None:
        self.engine, self.table, self.count = engine, table, 0
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(f"UPDATE {self.table.upper()} "):
            self.count += 1

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)


def test_a_batchs_updates_go_in_few_statements_and_the_last_write_wins(
    hard: IntegrationBus,
) -> None:
    bus = hard
    names = [f"wb{i}" for i in range(20)]
    for name in names:
        log(bus, item(item_name=name, count=0))
    run(bus)
    for r in range(1, 9):
        for i, name in enumerate(names):
            log(bus, item(item_name=name, count=r * 100 + i, note=f"round {r}"), UPDATE)
    updates = _Updates(bus.engine, "hard_item")
    try:
        result = run(bus)
    finally:
        updates.close()
    assert result.applied == 160 and result.failed == 0
    if bus.engine.dialect.name == "postgresql":
        # Multi-row UPDATEs (Dialect.pipelined_executemany): a statement takes each object once, so
        # 20 objects updated 8 times go in 8 (9 if a flush splits the run).
        assert 8 <= updates.count <= 9, updates.count
    else:
        # 160 updates of one shape in one batch: one executemany (two if a flush splits it).
        assert 1 <= updates.count <= 2, updates.count
    got = _items(bus, names)
    for i, name in enumerate(names):
        assert got[name]["count"] == 800 + i and got[name]["note"] == "round 8"


@pytest.mark.parametrize("bad", [{"count": 10**30}, {"big": -(10**40)}])
def test_an_update_the_database_refuses_fails_alone(
    hard: IntegrationBus, bad: dict[str, Any]
) -> None:
    """The refused UPDATE is held back with the others and fails only when they are sent:
    the batch then goes task by task, and only that task fails."""
    bus = hard
    for name in ("a", "b", "c"):
        log(bus, item(item_name=name, count=0))
    run(bus)
    first = log(bus, item(item_name="a", count=1), UPDATE)
    refused = log(bus, item(item_name="b", count=5), UPDATE, process_type=SKIP)
    _store_raw(bus, refused, {"item_name": "b", **bad})
    behind = log(bus, item(item_name="c", count=3), UPDATE)
    last = log(bus, item(item_name="a", count=4), UPDATE)
    result = run(bus)
    assert result.applied == 3 and result.failed == 1
    assert bus.get_task(first) is None and bus.get_task(behind) is None
    assert bus.get_task(last) is None
    kept = bus.get_task(refused)
    assert kept is not None and kept.error_message  # failed alone, says why
    got = _items(bus, ["a", "b", "c"])
    assert (got["a"]["count"], got["b"]["count"], got["c"]["count"]) == (4, 0, 3)


def test_a_task_rolled_back_in_the_careful_pass_leaves_no_held_update(
    bus: IntegrationBus,
) -> None:
    """A batch holding a task that failed before goes task by task at once, each task in its
    SAVEPOINT. A task whose update of its main object was held back and whose child then
    fails is rolled back whole: its update must not be sent after the rollback."""
    from syncbus import ObjectType, TaskDataType

    bus.register_object_type(
        ObjectType(
            "wbk.box",
            "wbk_box",
            "box_id",
            code_name_column="box_name",
            columns={"box_name": str, "size": int},
        )
    )
    bus.register_object_type(
        ObjectType(
            "wbk.thing",
            "wbk_thing",
            "thing_id",
            code_name_column="thing_name",
            parent=("box_id", "wbk.box"),
            columns={"thing_name": str, "n": int},
        )
    )
    bus.create_schema()
    add_connector(bus)
    log(bus, {"type": "wbk.box", "data": {"box_name": "b", "size": 0}})
    run(bus)
    failed_before = log(bus, {"type": "wbk.box", "data": {"box_name": "c", "size": 1}})
    with bus.engine.begin() as c:
        c.execute(
            sa.text("UPDATE syncbus_task SET error_message = 'earlier' WHERE task_id = :t"),
            {"t": failed_before},
        )
    snapshot = {
        "type": "wbk.box",
        "data": {"box_name": "b", "size": 5},
        "children": [{"type": "wbk.thing", "data": {"thing_name": "t", "n": 1}}],
    }
    bad = log(bus, snapshot, UPDATE, data_type=TaskDataType.SNAPSHOT, process_type=SKIP)
    # A child the database refuses (past the log-time checks): its INSERT fails after the
    # box's UPDATE was held back.
    child = InternalObject("wbk.thing", {"thing_name": "t", "n": 10**30})
    payload = Payload(obj=InternalObject("wbk.box", {"box_name": "b", "size": 5}, [child]))
    with bus.engine.begin() as c:
        c.execute(
            sa.text("UPDATE syncbus_task SET data = :d WHERE task_id = :t"),
            {"d": encode(payload), "t": bad},
        )
    result = run(bus)
    assert result.failed == 1 and result.applied == 1
    kept = bus.get_task(bad)
    assert kept is not None and kept.error_message
    with bus.engine.connect() as c:
        size = c.execute(sa.text("SELECT size FROM wbk_box WHERE box_name = 'b'")).scalar()
        things = c.execute(sa.text("SELECT count(*) FROM wbk_thing")).scalar()
    assert (size, things) == (0, 0)


@pytest.fixture
def scratch(bus: IntegrationBus) -> Iterator[tuple[sa.Engine, sa.Table, sa.Table]]:
    meta = sa.MetaData()
    one = sa.Table(
        f"wb_one_{next(_n)}",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("v", sa.Integer),
    )
    two = sa.Table(
        f"wb_two_{next(_n)}",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("v", sa.Integer),
    )
    meta.create_all(bus.engine)
    with bus.engine.begin() as c:
        for t in (one, two):
            c.execute(t.insert(), [{"id": i, "v": 0} for i in range(1, 4)])
    yield bus.engine, one, two
    meta.drop_all(bus.engine)


def test_reads_see_held_updates_and_only_what_needs_them_sends_them(
    scratch: tuple[sa.Engine, sa.Table, sa.Table],
) -> None:
    engine, one, two = scratch
    upd = one.update().where(one.c.id == sa.bindparam("key"))
    upd_two = two.update().where(two.c.id == sa.bindparam("key"))
    with engine.begin() as conn, WriteBehind(conn) as held:
        # A multi-row UPDATE (PostgreSQL) takes each row once: key 1 twice makes two.
        split = 1 if held.multirow else 0
        held.update(upd, {"v": 1, "key": 1}, (one,))
        held.update(upd, {"v": 2, "key": 1}, (one,))  # the later write wins
        held.update(upd, {"v": 7, "key": 2}, (one,))
        assert held.held == 3
        # A read of another table, and a plain insert, leave them held.
        assert conn.execute(sa.select(sa.func.sum(two.c.v))).scalar() == 0
        conn.execute(one.insert(), {"id": 9, "v": 9})
        assert held.held == 3 and held.sent_statements == 0
        # A read of their table sees them: sent first, as one statement (two, see above).
        assert dict(conn.execute(sa.select(one.c.id, one.c.v)).all()) == {
            1: 2,
            2: 7,
            3: 0,
            9: 9,
        }
        assert held.held == 0 and held.sent_statements == 1 + split
        # A read sends the updates of the tables it reads (each table keeps its order);
        # updates of other tables stay held.
        held.update(upd_two, {"v": 4, "key": 1}, (two,))
        held.update(upd, {"v": 3, "key": 3}, (one,))
        held.update(upd, {"v": 5, "key": 3}, (one,))
        assert conn.execute(sa.select(two.c.v).where(two.c.id == 1)).scalar() == 4
        assert held.held == 2 and held.sent_statements == 2 + split
        # A DELETE by primary key of a row of another table (no foreign key between them)
        # leaves them held; one of a row with a held update sends that first.
        by_key = sa.bindparam("gone")
        conn.execute(two.delete().where(two.c.id == by_key), {"gone": 3})
        assert held.held == 2
        conn.execute(one.delete().where(one.c.id == by_key), {"gone": 1})
        assert held.held == 2
        conn.execute(one.delete().where(one.c.id == by_key), {"gone": 3})
        assert held.held == 0
        # Any other DELETE sends everything first (its cascades could reach any table).
        held.update(upd, {"v": 8, "key": 2}, (one,))
        conn.execute(two.delete().where(two.c.id == 2))
        assert held.held == 0
        conn.execute(one.delete().where(one.c.id == 9))
        held.update(upd, {"v": 6, "key": 2}, (one,))
    # Leaving the block sends what is left.
    with engine.connect() as conn:
        assert dict(conn.execute(sa.select(one.c.id, one.c.v)).all()) == {2: 6}


def test_a_read_sends_its_tables_runs_and_what_their_order_ties_to_them(
    scratch: tuple[sa.Engine, sa.Table, sa.Table],
) -> None:
    """A read of one table sends that table's held runs and no other table's, even those
    held before them; a run that writes both tables ties their order: it goes with the
    runs of the other table held before it, and the runs held after it stay held."""
    engine, one, two = scratch
    upd_one = one.update().where(one.c.id == sa.bindparam("key"))
    upd_two = two.update().where(two.c.id == sa.bindparam("key"))
    with engine.begin() as conn, WriteBehind(conn) as held:
        held.update(upd_two, {"v": 5, "key": 3}, (two,))
        held.update(upd_one, {"v": 1, "key": 1}, (one,))
        assert conn.execute(sa.select(one.c.v).where(one.c.id == 1)).scalar() == 1
        assert held.held == 1  # two's update, held before it, is still held
        held.update(upd_one, {"v": 3, "key": 2}, (one, two))  # declared to write both
        held.update(upd_two, {"v": 4, "key": 2}, (two,))
        held.update(upd_one, {"v": 6, "key": 3}, (one,))
        assert held.held == 4
        # Reading one: its runs go, and two's run held before the run that writes both.
        assert dict(conn.execute(sa.select(one.c.id, one.c.v)).all()) == {1: 1, 2: 3, 3: 6}
        assert held.held == 1
        assert conn.execute(sa.select(two.c.v).where(two.c.id == 3)).scalar() == 5
        assert conn.execute(sa.select(two.c.v).where(two.c.id == 2)).scalar() == 4
        assert held.held == 0


@pytest.fixture
def family(bus: IntegrationBus) -> Iterator[tuple[sa.Engine, sa.Table, sa.Table, sa.Table]]:
    """grand <- parent <- child (ON DELETE CASCADE), a unique name on child."""
    meta, n = sa.MetaData(), next(_n)
    grand = sa.Table(
        f"wb_grand_{n}",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("v", sa.Integer),
    )
    parent = sa.Table(
        f"wb_parent_{n}",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("grand_id", sa.ForeignKey(grand.c.id, ondelete="CASCADE")),
    )
    child = sa.Table(
        f"wb_child_{n}",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("parent_id", sa.ForeignKey(parent.c.id, ondelete="CASCADE")),
        sa.Column("name", sa.String(20), unique=True),
    )
    meta.create_all(bus.engine)
    with bus.engine.begin() as c:
        c.execute(grand.insert(), [{"id": 1}, {"id": 2}])
        c.execute(parent.insert(), [{"id": 1, "grand_id": 1}, {"id": 2, "grand_id": 2}])
        c.execute(child.insert(), [{"id": 1, "parent_id": 1, "name": "x"}])
        c.execute(child.insert(), [{"id": 2, "parent_id": 2, "name": "y"}])
    yield bus.engine, grand, parent, child
    meta.drop_all(bus.engine)


def _delete_grand(conn: sa.Connection, grand: sa.Table, by_key: bool) -> None:
    """Delete grand 1: by its primary key as a parameter (the DELETE write-behind can tell
    apart), or with the key in the SQL (one it cannot: it sends everything first)."""
    if by_key:
        conn.execute(grand.delete().where(grand.c.id == sa.bindparam("g")), {"g": 1})
    else:
        conn.execute(grand.delete().where(grand.c.id == 1))


@pytest.mark.parametrize("by_key", [True, False])
def test_a_delete_sends_the_held_updates_of_the_tables_its_cascade_reaches(
    family: tuple[sa.Engine, sa.Table, sa.Table, sa.Table], by_key: bool
) -> None:
    """A held rename of a child to the name of a child that a DELETE two levels up cascades
    away conflicts in task order: sent first, it still does (sent after, it would not)."""
    engine, grand, _parent, child = family
    rename = child.update().where(child.c.id == sa.bindparam("key"))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn, WriteBehind(conn) as held:
        held.update(rename, {"name": "x", "key": 2}, (child,))
        _delete_grand(conn, grand, by_key)
    with engine.connect() as conn:
        assert conn.execute(sa.select(child.c.id, child.c.name).order_by(child.c.id)).all() == [
            (1, "x"),
            (2, "y"),
        ]


@pytest.mark.parametrize("by_key", [True, False])
def test_a_held_update_of_a_row_a_delete_removes_still_fails_as_it_would_have(
    family: tuple[sa.Engine, sa.Table, sa.Table, sa.Table], by_key: bool
) -> None:
    """Parent 1 pointed at a grand that does not exist fails in task order. The DELETE of
    grand 1 behind it removes parent 1 (ON DELETE CASCADE): sent after it, the update would
    match no row and pass. So it goes first, and fails."""
    engine, grand, parent, _child = family
    move = parent.update().where(parent.c.id == sa.bindparam("key"))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn, WriteBehind(conn) as held:
        held.update(move, {"grand_id": 999, "key": 1}, (parent,))
        _delete_grand(conn, grand, by_key)
    with engine.connect() as conn:
        assert conn.execute(sa.select(grand.c.id).order_by(grand.c.id)).scalars().all() == [1, 2]


def test_a_delete_by_key_leaves_what_it_cannot_tell_held(
    family: tuple[sa.Engine, sa.Table, sa.Table, sa.Table],
) -> None:
    """Deleting a child (nothing references children) leaves a held update of grand 2 and
    of the other child held; the update of the child it deletes goes first, and the update
    of grand (another table, held before it) stays held."""
    engine, grand, _parent, child = family
    upd_grand = grand.update().where(grand.c.id == sa.bindparam("key"))
    upd_child = child.update().where(child.c.id == sa.bindparam("key"))
    gone = child.delete().where(child.c.id == sa.bindparam("c"))
    with engine.begin() as conn, WriteBehind(conn) as held:
        held.update(upd_grand, {"v": 5, "key": 2}, (grand,))
        held.update(upd_child, {"parent_id": 2, "key": 2}, (child,))
        conn.execute(gone, {"c": 1})
        assert held.held == 2
        conn.execute(gone, {"c": 2})
        assert held.held == 1  # its own update went first; grand's is still held
    with engine.connect() as conn:
        assert conn.execute(sa.select(child.c.id)).all() == []
        assert conn.execute(sa.select(grand.c.v).where(grand.c.id == 2)).scalar() == 5


def test_an_error_inside_the_block_sends_nothing(
    scratch: tuple[sa.Engine, sa.Table, sa.Table],
) -> None:
    engine, one, _ = scratch
    upd = one.update().where(one.c.id == sa.bindparam("key"))
    with pytest.raises(RuntimeError), engine.begin() as conn, WriteBehind(conn) as held:
        held.update(upd, {"v": 1, "key": 1}, (one,))
        raise RuntimeError("the batch failed")
    with engine.connect() as conn:
        assert conn.execute(sa.select(one.c.v).where(one.c.id == 1)).scalar() == 0


# -- multi-row UPDATEs (PostgreSQL): as the updates one by one would ------------------------
@pytest.fixture
def typed(bus: IntegrationBus) -> Iterator[tuple[sa.Engine, sa.Table]]:
    """A row of each kind of column, and a unique name."""
    meta = sa.MetaData()
    table = sa.Table(
        f"wb_typed_{next(_n)}",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(20), unique=True),
        sa.Column("label", sa.String(3)),
        sa.Column("ratio", sa.Float),
        sa.Column("flag", sa.Boolean),
        sa.Column("count", sa.Integer),
        sa.Column("extra", sa.JSON),
        sa.Column("at", sa.Time),  # not sent as an array: the UNION form (PostgreSQL)
    )
    meta.create_all(bus.engine)
    with bus.engine.begin() as c:
        c.execute(table.insert(), [{"id": i, "name": f"n{i}"} for i in range(1, 201)])
    yield bus.engine, table
    meta.drop_all(bus.engine)


def _sent(engine: sa.Engine, table: sa.Table, updates: list[dict[str, Any]]) -> int:
    """Hold ``updates`` of ``table`` back and send them; returns the statements sent."""
    upd = table.update().where(table.c.id == sa.bindparam("key"))
    with engine.begin() as conn, WriteBehind(conn) as held:
        for params in updates:
            held.update(upd, params, (table,))
        held.flush()
        return held.sent_statements


def test_a_run_goes_in_few_statements_whatever_its_size_and_its_nulls(
    typed: tuple[sa.Engine, sa.Table],
) -> None:
    """200 updates go in two statements on PostgreSQL (128 rows at most each), one
    executemany on SQLite; a column NULL in every row (float, bool: no cast of their own)
    still takes its column's type."""
    engine, table = typed
    rows = [
        {"key": i, "label": None, "ratio": None, "flag": None, "count": i, "extra": {"i": i}}
        for i in range(1, 201)
    ]
    sent = _sent(engine, table, rows)
    assert sent == (2 if engine.dialect.name == "postgresql" else 1)
    rows = [{"key": i, "ratio": i / 2, "flag": i % 2 == 0} for i in (1, 2, 3)]
    assert _sent(engine, table, rows) == 1
    with engine.connect() as conn:
        got = {r.id: r for r in conn.execute(sa.select(table))}
    assert [(got[i].ratio, got[i].flag, got[i].count) for i in (1, 2, 3, 4)] == [
        (0.5, False, 1),
        (1.0, True, 2),
        (1.5, False, 3),
        (None, None, 4),
    ]
    assert got[200].extra == {"i": 200} and got[200].label is None


def test_a_run_of_a_type_not_sent_as_arrays_types_its_rows_by_the_table(
    typed: tuple[sa.Engine, sa.Table],
) -> None:
    """A column of a type the array form does not take (TIME) sends the run as a UNION of
    rows under a typed empty SELECT of the table: a float column NULL in every row (no cast of
    its own) still takes its column's type."""
    engine, table = typed
    cols = ("ratio", "at", "count")
    assert writes._by_arrays(table, "id", cols) is None
    assert writes._by_arrays(table, "id", ("ratio", "count")) is not None
    rows = [{"key": i, "ratio": None, "at": dt.time(1, i), "count": i} for i in (1, 2, 3)]
    assert _sent(engine, table, rows) == 1
    with engine.connect() as conn:
        got = conn.execute(sa.select(table.c.id, table.c.ratio, table.c.at).where(table.c.id <= 3))
        assert sorted(got.all()) == [(i, None, dt.time(1, i)) for i in (1, 2, 3)]


def test_json_lists_stay_whole_and_a_list_in_a_scalar_column_is_refused(
    typed: tuple[sa.Engine, sa.Table],
) -> None:
    """Sent as arrays (PostgreSQL), a JSON value that is a list must stay one value (not a
    dimension of the array, whose items unnest would spread over rows); a list where an
    integer goes fails as it does in a single-row UPDATE, never lands in pieces."""
    engine, table = typed
    rows = [{"key": i, "extra": [i, i + 1], "count": i} for i in (1, 2, 3)]
    assert _sent(engine, table, rows) == 1
    with engine.connect() as conn:
        got = conn.execute(sa.select(table.c.id, table.c.extra).where(table.c.id <= 4))
        assert sorted(got.all()) == [(1, [1, 2]), (2, [2, 3]), (3, [3, 4]), (4, None)]
    with pytest.raises(sa.exc.StatementError):
        _sent(engine, table, [{"key": 5, "count": [7, 8]}, {"key": 6, "count": [9, 10]}])
    with engine.connect() as conn:
        got = conn.execute(sa.select(table.c.count).where(table.c.id.in_([5, 6, 7])))
        assert got.scalars().all() == [None, None, None]


def test_a_value_too_long_is_refused_not_cut(typed: tuple[sa.Engine, sa.Table]) -> None:
    engine, table = typed
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    with pytest.raises(sa.exc.DataError):
        _sent(engine, table, [{"key": 1, "label": "ab"}, {"key": 2, "label": "abcd"}])
    with engine.connect() as conn:
        assert conn.execute(sa.select(table.c.label).where(table.c.id <= 2)).all() == [
            (None,),
            (None,),
        ]


def test_a_run_that_sets_a_unique_column_keeps_the_order_of_its_updates(
    typed: tuple[sa.Engine, sa.Table],
) -> None:
    """n1 -> n2 then n2 -> n3: one by one the first conflicts. A multi-row UPDATE could apply
    the second first and let both pass; such a run goes row by row."""
    engine, table = typed
    with pytest.raises(sa.exc.IntegrityError):
        _sent(engine, table, [{"key": 1, "name": "n2"}, {"key": 2, "name": "n3"}])
    with engine.connect() as conn:
        names = conn.execute(sa.select(table.c.name).where(table.c.id <= 2).order_by(table.c.id))
        assert names.scalars().all() == ["n1", "n2"]
    # Which order a multi-row UPDATE takes is the planner's, so the test above may pass either
    # way; what makes it hold is that such a run goes one statement per update there.
    renames = [{"key": i, "name": f"m{i}"} for i in (1, 2, 3)]
    assert _sent(engine, table, renames) == (3 if engine.dialect.name == "postgresql" else 1)
    # Told the unique column keeps its values (the identity the rows were found by), the
    # run goes grouped again.
    upd = table.update().where(table.c.id == sa.bindparam("key"))
    with engine.begin() as conn, WriteBehind(conn) as held:
        for i in (1, 2, 3):
            held.update(upd, {"key": i, "name": f"m{i}", "count": 7}, (table,), frozenset({"name"}))
        held.flush()
        assert held.sent_statements == 1


def test_an_object_updated_twice_in_a_run_ends_with_its_last_values(
    typed: tuple[sa.Engine, sa.Table],
) -> None:
    engine, table = typed
    rows = [{"key": k, "count": n} for n, k in enumerate([1, 2, 1, 1, 3, 2])]
    sent = _sent(engine, table, rows)
    assert sent == (3 if engine.dialect.name == "postgresql" else 1)
    with engine.connect() as conn:
        got = dict(conn.execute(sa.select(table.c.id, table.c.count).where(table.c.id <= 3)).all())
    assert got == {1: 3, 2: 5, 3: 4}


@pytest.fixture
def wide(bus: IntegrationBus) -> Iterator[tuple[sa.Engine, sa.Table, sa.Table]]:
    """Two tables alike, with a column of each type the JSON form takes (``writes._by_json``),
    four rows each: one to update grouped, one to update a statement per update."""
    meta = sa.MetaData()
    tables = []
    for suffix in ("grouped", "single"):
        table = sa.Table(
            f"wb_wide_{next(_n)}_{suffix}",
            meta,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("label", sa.String(3)),
            sa.Column("note", sa.Text),
            sa.Column("count", sa.Integer),
            sa.Column("big", sa.BigInteger),
            sa.Column("ratio", sa.Float),
            sa.Column("amount", sa.Numeric(12, 3)),
            sa.Column("flag", sa.Boolean),
            sa.Column("day", sa.Date),
            sa.Column("at_tz", sa.DateTime(timezone=True)),
            sa.Column("at_naive", sa.DateTime),
            sa.Column("uid", sa.Uuid),
        )
        tables.append(table)
    meta.create_all(bus.engine)
    with bus.engine.begin() as c:
        for table in tables:
            c.execute(table.insert(), [{"id": i} for i in range(1, 5)])
    yield bus.engine, tables[0], tables[1]
    meta.drop_all(bus.engine)


_PLUS_5 = dt.timezone(dt.timedelta(hours=5))
_EXACT = {
    "label": "a\"'",
    "note": "quotes \" ' \\ and {braces}, a tab\t, é and 😀",
    "count": -7,
    "big": 2**62,
    "ratio": 0.1,
    "amount": decimal.Decimal("12345.678"),
    "flag": False,
    "day": dt.date(2026, 12, 6),
    "at_tz": dt.datetime(2026, 12, 6, 19, 30, 1, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "at_naive": dt.datetime(2026, 12, 6, 19, 30, 1, 654321),
    "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


@pytest.mark.parametrize(
    ("change", "as_json"),
    [
        ({}, True),
        ({"ratio": 3, "amount": 7, "count": None}, True),  # an int where a float goes
        ({"note": "a NUL \x00 inside"}, False),  # PostgreSQL's JSON has no NUL in a text
        ({"at_naive": dt.datetime(2026, 1, 1, 12, tzinfo=_PLUS_5)}, False),  # a zone: no
        ({"day": dt.datetime(2026, 1, 1, 12)}, False),  # a datetime where a date goes
        ({"flag": 1}, False),  # not a bool
    ],
)
def test_a_run_sent_as_one_json_document_ends_as_its_updates_one_by_one(
    wide: tuple[sa.Engine, sa.Table, sa.Table], change: dict[str, Any], as_json: bool
) -> None:
    """PostgreSQL: a run whose values JSON carries exactly goes as one JSON document (one
    parameter) turned into rows by the server; one with a value JSON would not bring back as
    psycopg binds it goes the other ways. Either way the rows end as the same updates sent one
    statement each would leave them (on SQLite too, where runs go by executemany)."""
    engine, grouped, single = wide
    values = {**_EXACT, **change}
    if engine.dialect.name == "sqlite" and "note" in change:
        values["note"] = "no NUL"  # SQLite's text ends at a NUL for some readers: not the point
    rows = [
        {"key": k, **values, "count": k if values["count"] is not None else None} for k in (1, 2, 3)
    ]
    rows.append({"key": 1, "label": "b", "note": "last wins"})  # a second layer
    seen: list[str] = []

    def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    refused = engine.dialect.name == "postgresql" and "\x00" in str(values["note"])
    sa.event.listen(engine, "before_cursor_execute", watch)
    try:
        if refused:  # refused with psycopg's own words, as the update alone is, not JSON's
            with pytest.raises(sa.exc.DataError, match="cannot contain NUL"):
                _sent(engine, grouped, rows)
        else:
            _sent(engine, grouped, rows)
    finally:
        sa.event.remove(engine, "before_cursor_execute", watch)
    if refused:
        assert not any("json_to_recordset" in s for s in seen), seen
        return
    upd = single.update().where(single.c.id == sa.bindparam("key"))
    with engine.begin() as conn:
        for params in rows:
            conn.execute(upd, params)
    if engine.dialect.name == "postgresql":
        assert any("json_to_recordset" in s for s in seen) is as_json, seen
    with engine.connect() as conn:
        a = [r._asdict() for r in conn.execute(sa.select(grouped).order_by(grouped.c.id))]
        b = [r._asdict() for r in conn.execute(sa.select(single).order_by(single.c.id))]
    assert a == b
    assert a[1]["note"] == values["note"] and a[0]["note"] == "last wins"
    assert a[3] == {"id": 4, **dict.fromkeys(_EXACT)}


def test_a_value_json_cannot_carry_is_refused_as_it_would_be_alone(
    wide: tuple[sa.Engine, sa.Table, sa.Table],
) -> None:
    """A float where an integer goes, and a text too long for its column: refused whole (no
    row of the run changed), as the same update alone is refused."""
    engine, grouped, _ = wide
    for bad in ({"count": 1.5}, {"label": "abcd"}):
        if engine.dialect.name == "sqlite":
            pytest.skip("SQLite takes both (no types, no lengths)")
        with pytest.raises(sa.exc.DBAPIError):
            _sent(engine, grouped, [{"key": 1, "count": 1}, {"key": 2, **bad}])
        with engine.connect() as conn:
            assert (
                conn.execute(sa.select(grouped.c.count, grouped.c.label)).all()
                == [(None, None)] * 4
            )


def test_bursts_of_updates_go_in_layers(typed: tuple[sa.Engine, sa.Table]) -> None:
    """Three updates of each of three objects, object by object: the n-th update of each
    goes in the n-th statement (on PostgreSQL; one executemany on SQLite), the last wins."""
    engine, table = typed
    rows = [{"key": k, "count": 10 * k + n} for k in (1, 2, 3) for n in range(3)]
    sent = _sent(engine, table, rows)
    assert sent == (3 if engine.dialect.name == "postgresql" else 1)
    with engine.connect() as conn:
        got = dict(conn.execute(sa.select(table.c.id, table.c.count).where(table.c.id <= 3)).all())
    assert got == {1: 12, 2: 22, 3: 32}


# -- grouped == one by one, over every column type ------------------------------------------
steps_strategy = st.lists(
    st.tuples(
        st.sampled_from(["update", "update", "update", "create", "delete"]),
        st.integers(0, 2),
        st.sampled_from(sorted(set(HARD.columns) - {"item_name"})),
        typed_values | st.integers(-(2**70), 2**70),
    ),
    min_size=1,
    max_size=12,
)
KIND = {"update": UPDATE, "create": TaskType.CREATE_OBJECT, "delete": TaskType.DELETE_OBJECT}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps_strategy)
def test_writes_applied_grouped_end_as_applied_one_per_batch(
    hard: IntegrationBus, steps: list[tuple[str, int, str, Any]]
) -> None:
    """Bad input over every column type, stored past the log-time checks so that the
    database is what refuses it, between creates and deletes of the same rows: the same tasks
    end the same (which applied, what the rows hold) whether a batch holds them all or each
    goes in a batch of its own."""
    bus = hard
    single = IntegrationBus(bus.engine.url.render_as_string(hide_password=False), batch_size=1)
    try:
        single.register_object_type(HARD)
        add_connector(single, "OneByOne")
        outcomes, contents = [], []
        for who, connector in ((bus, CONNECTOR), (single, "OneByOne")):
            prefix = f"g{next(_n)}-"
            names = [f"{prefix}{i}" for i in range(3)]
            for name in names:
                log(who, item(item_name=name, count=1), connector=connector)
            run(who, connector)
            ids = []
            for kind, i, column, value in steps:
                obj = item(item_name=names[i])
                task_id = log(who, obj, KIND[kind], connector=connector, process_type=SKIP)
                if kind != "delete":
                    _store_raw(who, task_id, {"item_name": names[i], column: value})
                ids.append(task_id)
            run(who, connector)
            outcomes.append([who.get_task(t) is None for t in ids])
            got = _items(who, names)
            contents.append(
                [
                    {k: v for k, v in got[n].items() if k not in ("item_id", "item_name")}
                    if n in got
                    else None
                    for n in names
                ]
            )
            who.delete_tasks(ids)
        assert outcomes[0] == outcomes[1]
        assert contents[0] == contents[1]
    finally:
        single.close()
