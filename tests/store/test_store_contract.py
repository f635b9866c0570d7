"""The store's contract, on SQLite and PostgreSQL: what ``syncbus.store`` promises its callers
(the dialect, leases, switches, the task log), checked against the store API directly, and
what the bus builds on it (claim order, idempotency keys, ids in commit order) under
concurrency. Each backend must keep every promise, in its own way where the dialect says so."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus, ProcessResult
from syncbus.store import leases, logs, switches
from syncbus.store.db import BUSY_TIMEOUT, utcnow
from syncbus.store.dialect import NOTIFY_CHANNEL, POSTGRES, SQLITE, Dialect, dialect_of
from syncbus.store.tables import (
    connector_table,
    lease_table,
    setting_table,
    sync_log_table,
    task_table,
)
from tests.helpers import add_connector, log, user, wait_for
from tests.seq import make_bus


def dialect(bus: IntegrationBus) -> Dialect:
    with bus.engine.connect() as conn:
        return dialect_of(conn)


def settings_rows(bus: IntegrationBus) -> dict[str, str]:
    with bus.engine.connect() as conn:
        rows = conn.execute(sa.select(setting_table.c.key, setting_table.c.value)).all()
    return {str(k): str(v) for k, v in rows}


# -- the dialect -------------------------------------------------------------------------------


def test_each_backend_has_its_dialect(bus: IntegrationBus) -> None:
    expected = POSTGRES if bus.engine.dialect.name == "postgresql" else SQLITE
    assert dialect(bus) is expected
    assert dialect_of(bus.engine) is expected


def test_insert_ignore_is_idempotent_and_keeps_the_first_row(bus: IntegrationBus) -> None:
    for value in ("first", "second", "second"):
        with bus.engine.begin() as conn:
            dialect_of(conn).insert_ignore(conn, setting_table, {"key": "k", "value": value})
    assert settings_rows(bus).get("k") == "first"


def test_upsert_inserts_then_updates_one_row(bus: IntegrationBus) -> None:
    for value in ("first", "second"):
        with bus.engine.begin() as conn:
            dialect_of(conn).upsert(conn, setting_table, {"key": "k", "value": value}, ["key"])
        assert settings_rows(bus).get("k") == value
    with bus.engine.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).where(setting_table.c.key == "k")
        ).scalar_one()
    assert count == 1


def test_now_epoch_is_the_database_clock_and_moves_inside_a_transaction(
    bus: IntegrationBus,
) -> None:
    with bus.engine.begin() as conn:
        now = dialect_of(conn).now_epoch()

        def read() -> float:
            return float(conn.execute(sa.select(now)).scalar_one())

        first = read()
        # Seconds since the epoch, on this machine's clock (the database runs here); the margin
        # only tells the unit and the epoch apart (ms, days, a transaction's start an hour ago).
        assert abs(first - time.time()) < 60
        # Leases compare against it inside long transactions: it must not stand still there
        # (PostgreSQL's now() would), nor go back.
        wait_for(lambda: read() > first)
        readings = [read() for _ in range(20)]
    assert readings == sorted(readings) and readings[0] > first


def test_byte_length_counts_bytes_not_characters(bus: IntegrationBus) -> None:
    with bus.engine.connect() as conn:
        length = conn.execute(
            sa.select(dialect_of(conn).byte_length(sa.literal("ü€x", sa.Text)))
        ).scalar_one()
    assert length == 2 + 3 + 1


@contextmanager
def holding_task(bus: IntegrationBus, task_id: int) -> Iterator[None]:
    """Hold a task the way a running batch does: PostgreSQL, its row locked FOR UPDATE;
    SQLite, the database's write lock."""
    with bus.engine.connect() as conn:
        conn.begin()
        select = sa.select(task_table.c.task_id).where(task_table.c.task_id == task_id)
        if dialect_of(conn).skip_locked(select) is not None:
            conn.execute(select.with_for_update())
        else:
            conn.execute(
                task_table.update()
                .where(task_table.c.task_id == task_id)
                .values(title=task_table.c.title)
            )
        try:
            yield
        finally:
            conn.rollback()


def lock_nowait(bus: IntegrationBus, task_id: int) -> list[int]:
    """Lock a task without waiting, as admin actions do (SQLite: a writer that waits 50 ms)."""
    engine = bus.engine.execution_options(**{BUSY_TIMEOUT: 50})
    with engine.begin() as conn:
        d = dialect_of(conn)
        stmt = sa.select(task_table.c.task_id).where(task_table.c.task_id == task_id)
        return list(conn.execute(d.lock_nowait(stmt)).scalars())


def test_lock_nowait_fails_at_once_on_a_held_task_with_a_lock_wait_error(
    bus: IntegrationBus,
) -> None:
    add_connector(bus)
    task_id = log(bus, user("held"))
    assert lock_nowait(bus, task_id) == [task_id]  # free: locked and released
    with holding_task(bus, task_id), pytest.raises(sa.exc.OperationalError) as caught:
        lock_nowait(bus, task_id)
    d = dialect(bus)
    assert d.is_lock_wait(caught.value), caught.value
    assert d.is_transient(caught.value)  # the database's trouble, not the task's
    assert lock_nowait(bus, task_id) == [task_id]  # released with the holder


def test_skip_locked_leaves_out_held_rows_where_rows_lock(bus: IntegrationBus) -> None:
    add_connector(bus)
    held, free = log(bus, user("held")), log(bus, user("free"))
    d = dialect(bus)
    stmt = sa.select(task_table.c.task_id).order_by(task_table.c.task_id)
    if d is SQLITE:
        assert d.skip_locked(stmt) is None  # a writer holds the whole database
        return
    with holding_task(bus, held), bus.engine.begin() as conn:
        locked = d.skip_locked(stmt)
        assert locked is not None
        assert list(conn.execute(locked).scalars()) == [free]
    with bus.engine.begin() as conn:
        assert list(conn.execute(locked).scalars()) == [held, free]


def test_is_lock_wait_and_is_transient_tell_real_errors_apart(bus: IntegrationBus) -> None:
    d = dialect(bus)

    def error_of(statement: str) -> sa.exc.DBAPIError:
        with pytest.raises(sa.exc.DBAPIError) as caught, bus.engine.begin() as conn:
            conn.exec_driver_sql(statement)
        return caught.value

    no_table = error_of("SELECT * FROM no_such_table")
    duplicate = error_of("INSERT INTO syncbus_setting (key, value) VALUES ('a', ''), ('a', '')")
    for task_errors in (no_table, duplicate):  # a task's trouble: retrying will not help
        assert not d.is_transient(task_errors), task_errors
        assert not d.is_lock_wait(task_errors), task_errors
    if d is POSTGRES:
        assert not d.is_transient(error_of("SELECT 1 / 0"))
        unreachable = sa.create_engine("postgresql+psycopg://x@127.0.0.1:1/x")
        with pytest.raises(sa.exc.OperationalError) as caught:
            unreachable.connect()
        assert d.is_transient(caught.value) and not d.is_lock_wait(caught.value)
    else:
        locked = sa.exc.OperationalError("BEGIN", {}, Exception("database is locked"))
        assert d.is_transient(locked) and d.is_lock_wait(locked)


def test_notify_wakes_a_listener_when_the_backend_notifies(bus: IntegrationBus) -> None:
    d = dialect(bus)
    if not d.notifies:  # SQLite: workers poll; notifying is allowed and does nothing
        with bus.engine.begin() as conn:
            d.notify(conn, "Seq")
        return
    url = bus.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        with bus.engine.begin() as conn:
            d.notify(conn, "Seq")
            # Only on commit: a rolled-back log wakes no one.
            assert list(listener.notifies(timeout=0.2, stop_after=1)) == []
        [note] = list(listener.notifies(timeout=30, stop_after=1))
    assert (note.channel, note.payload) == (NOTIFY_CHANNEL, "Seq")


# -- leases ------------------------------------------------------------------------------------


@pytest.fixture
def connector_id(bus: IntegrationBus) -> int:
    add_connector(bus)
    with bus.engine.begin() as conn:
        cid = int(conn.execute(sa.select(connector_table.c.connector_id)).scalar_one())
        leases.ensure_lease_row(conn, cid)
        leases.ensure_lease_row(conn, cid)  # idempotent
    return cid


def lease_call(bus: IntegrationBus, call: Any, *args: Any, **kw: Any) -> Any:
    with bus.engine.begin() as conn:
        return call(conn, *args, **kw)


def owner_of(bus: IntegrationBus, cid: int) -> str | None:
    with bus.engine.connect() as conn:
        return conn.execute(
            sa.select(lease_table.c.owner).where(lease_table.c.connector_id == cid)
        ).scalar_one()


def test_a_lease_is_taken_only_when_free(bus: IntegrationBus, connector_id: int) -> None:
    assert lease_call(bus, leases.acquire_lease, connector_id, "a", 60)
    assert not lease_call(bus, leases.acquire_lease, connector_id, "b", 60)
    assert not lease_call(bus, leases.acquire_lease, connector_id, "a", 60)  # not re-entrant
    assert owner_of(bus, connector_id) == "a"


def test_an_expired_lease_is_taken_over(bus: IntegrationBus, connector_id: int) -> None:
    assert lease_call(bus, leases.acquire_lease, connector_id, "a", -1)  # ran out a second ago
    assert lease_call(bus, leases.acquire_lease, connector_id, "b", 60)
    assert owner_of(bus, connector_id) == "b"


def test_renew_is_fenced_by_the_owner(bus: IntegrationBus, connector_id: int) -> None:
    assert lease_call(bus, leases.acquire_lease, connector_id, "a", -1)
    assert not lease_call(bus, leases.renew_lease, connector_id, "b", 60)
    assert lease_call(bus, leases.renew_lease, connector_id, "a", 60, run_last_task_id=7)
    assert not lease_call(bus, leases.acquire_lease, connector_id, "b", 60)  # renewed: held
    assert lease_call(bus, leases.acquire_lease, connector_id, "c", 0) is False
    # Taken over after it ran out, the old owner's renewal fails: it lost the lease.
    assert lease_call(bus, leases.renew_lease, connector_id, "a", -1)
    assert lease_call(bus, leases.acquire_lease, connector_id, "b", 60)
    assert not lease_call(bus, leases.renew_lease, connector_id, "a", 60)
    assert owner_of(bus, connector_id) == "b"


def test_release_frees_the_lease_for_its_owner_only(bus: IntegrationBus, connector_id: int) -> None:
    assert lease_call(bus, leases.acquire_lease, connector_id, "a", 60)
    lease_call(bus, leases.release_lease, connector_id, "b")
    assert owner_of(bus, connector_id) == "a"
    lease_call(bus, leases.release_lease, connector_id, "a")
    assert owner_of(bus, connector_id) is None
    assert lease_call(bus, leases.acquire_lease, connector_id, "b", 60)


# -- switches ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "on"),
    [
        *[(None, True), ("1", True), ("true", True), ("Yes", True), ("ON", True)],
        *[("0", False), ("false", False), ("off", False), ("", False)],
    ],
)
def test_flag_reads_a_missing_row_as_on(value: str | None, on: bool) -> None:
    assert switches.flag(value) is on


def test_settings_round_trip(bus: IntegrationBus) -> None:
    with bus.engine.begin() as conn:
        assert switches.read_setting(conn, "x.a") is None
        switches.write_setting(conn, "x.a", "1")
        switches.write_setting(conn, "x.b", "two")
        switches.write_setting(conn, "x.a", "3")  # overwrites
    with bus.engine.connect() as conn:
        assert switches.read_setting(conn, "x.a") == "3"
        assert switches.read_settings(conn, ("x.a", "x.b", "x.none")) == {"x.a": "3", "x.b": "two"}
        expr = switches.setting_expr("x.b")
        assert conn.execute(sa.select(expr)).scalar_one() == "two"


# -- the task log ------------------------------------------------------------------------------


def test_record_task_error_collapses_repeats_within_a_second_only(
    bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_connector(bus)
    task_id = log(bus, user("u"))
    clock = [utcnow()]  # the log's clock, moved by the test instead of waiting
    monkeypatch.setattr(logs, "utcnow", lambda: clock[0])

    def record(message: str, collapse: bool = True, error_state: bool = False) -> None:
        with bus.engine.begin() as conn:
            logs.record_task_error(
                conn, task_id, message, set_error_state=error_state, collapse_repeats=collapse
            )

    record("boom")
    record("boom")  # a retry's repeat: collapsed
    clock[0] += timedelta(seconds=0.5)
    record("boom")  # still within the second
    record("bang")  # another error: written
    record("bang", collapse=False)  # an operator's attempt: always written
    clock[0] += timedelta(seconds=1.5)
    record("bang", error_state=True)  # a second later: written
    with bus.engine.connect() as conn:
        messages = list(
            conn.execute(
                sa.select(sync_log_table.c.error_message)
                .where(sync_log_table.c.task_id == task_id)
                .order_by(sync_log_table.c.log_id)
            ).scalars()
        )
    assert messages == ["boom", "bang", "bang", "bang"]
    task = bus.get_task(task_id)
    assert task is not None and task.error_message == "bang"
    assert task.process_type.value == "Error"


# -- what the bus builds on the store ----------------------------------------------------------


class AppliedOrder:
    def __init__(self) -> None:
        self.ids: list[int] = []

    def task_applied(self, connector: str, task_id: int, manual: bool) -> None:
        self.ids.append(task_id)

    def run_finished(self, result: ProcessResult) -> None:
        pass


def test_tasks_are_applied_in_id_order(db_url: str) -> None:
    bus = make_bus(db_url, batch_size=7)
    recorder = AppliedOrder()
    bus.hooks.subscribe(recorder)
    ids = [bus.process_external_task("Seq", {"key": f"k{n % 3}", "n": n}) for n in range(30)]
    bus.process_tasks("Seq")
    assert recorder.ids == ids == sorted(ids)  # type: ignore[type-var]
    assert {r["counter_name"]: r["n"] for r in bus.find_objects("seq.counter")} == {
        "k0": 27,
        "k1": 28,
        "k2": 29,
    }
    bus.close()


def in_threads(count: int, work: Any) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads started together; their results in order."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_one_idempotency_key_is_one_task_even_when_logged_at_once(db_url: str) -> None:
    buses = [make_bus(db_url) for _ in range(4)]  # as four programs would
    ids = in_threads(
        4,
        lambda i: buses[i].process_external_task("Seq", {"key": "k", "n": i}, idempotency_key="x"),
    )
    again = buses[0].process_external_task("Seq", {"key": "k", "n": 9}, idempotency_key="x")
    assert isinstance(ids[0], int) and ids == [ids[0]] * 4 and again == ids[0]
    assert [t.task_id for t in buses[0].list_tasks()] == [ids[0]]
    for b in buses:
        b.close()


def test_ids_become_visible_in_order_under_concurrent_loggers(db_url: str) -> None:
    """A reader never sees a task before every lower id that gets committed: a worker that
    applied up to id N never has a lower id turn up behind it."""
    buses = [make_bus(db_url) for _ in range(3)]
    reader = make_bus(db_url)
    snapshots: list[list[int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            snapshots.append([t.task_id for t in reader.list_tasks(limit=1000)])

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        in_threads(
            3,
            lambda i: [
                buses[i].process_external_task("Seq", {"key": f"k{i}", "n": n}) for n in range(100)
            ],
        )
    finally:
        done.set()
        watcher.join(60)
    final = [t.task_id for t in reader.list_tasks(limit=1000)]
    assert len(final) == 300 and final == sorted(final)
    for seen in snapshots:
        if seen:
            assert seen == [i for i in final if i <= max(seen)], "a lower id turned up later"
    for b in [*buses, reader]:
        b.close()


# -- one_of and json_rows: a batch's keys and records as few parameters ----------------------
_KEYS = sa.Table(
    "t_one_of",
    sa.MetaData(),
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("name", sa.String(100)),
    sa.Column("n", sa.Integer),
)
_AWKWARD = ["", "NULL", "null", 'q"uote', "back\\slash", "{brace}", "a,b", " sp ", "é ✓ 😀"]


def _keys_table(bus: IntegrationBus) -> None:
    _KEYS.create(bus.engine)
    rows = [{"id": i, "name": name, "n": i % 3} for i, name in enumerate(_AWKWARD)]
    rows += [{"id": 100 + i, "name": f"k{i}", "n": i % 3} for i in range(600)]
    with bus.engine.begin() as conn:
        conn.execute(_KEYS.insert(), rows)


def test_one_of_finds_exactly_the_keys_given_of_any_text_and_count(bus: IntegrationBus) -> None:
    _keys_table(bus)
    k = _KEYS.c
    with bus.engine.connect() as conn:
        one_of = dialect_of(conn).one_of

        def names(where: Any) -> set[str]:
            return {str(r) for r in conn.execute(sa.select(k.name).where(where)).scalars()}

        assert names(one_of(k.name, _AWKWARD)) == set(_AWKWARD)
        assert names(one_of(k.name, ["NULL", "missing", 'q"uote'])) == {"NULL", 'q"uote'}
        assert names(one_of(k.name, [])) == set()
        many = list(range(100, 700))
        assert len(names(one_of(k.id, many))) == 600
        pairs = [(0, 0), (101, 1), (102, 2), (103, 1), (5, 99)]
        assert names(one_of(sa.tuple_(k.id, k.n), pairs)) == {"", "k1", "k2"}


def test_one_of_on_postgresql_is_one_statement_whatever_the_count(bus: IntegrationBus) -> None:
    """The point of it there: the text psycopg converts and the server prepares once."""
    if not dialect(bus).json_refuses_nul:  # PostgreSQL; SQLite keeps IN lists
        pytest.skip("SQLite keeps IN lists")
    _keys_table(bus)
    seen: set[str] = set()
    sa.event.listen(bus.engine, "before_cursor_execute", lambda *a: seen.add(a[2]))
    with bus.engine.connect() as conn:
        one_of = dialect_of(conn).one_of
        for count in (1, 7, 200, 600):
            stmt = sa.select(_KEYS.c.id).where(one_of(_KEYS.c.id, list(range(100, 100 + count))))
            assert len(conn.execute(stmt).all()) == count
    assert len(seen) == 1, seen


def test_json_rows_reads_a_batch_document_back_typed(bus: IntegrationBus) -> None:
    """Scalars come typed; a nested value (typed None) as its JSON text, NULL for null."""
    import json

    doc = [
        {"i": 2**62, "s": 'q"uote é', "j": {"a": [1, "x", None]}},
        {"i": None, "s": None, "j": None},
        {"i": -1},
    ]
    with bus.engine.connect() as conn:
        rows, cols = dialect_of(conn).json_rows(
            sa.bindparam("d", type_=sa.Text), {"i": sa.BigInteger(), "s": sa.Text(), "j": None}
        )
        got = conn.execute(
            sa.select(cols["i"], cols["s"], cols["j"]).select_from(rows), {"d": json.dumps(doc)}
        ).all()
    assert [(r[0], r[1]) for r in got] == [(2**62, 'q"uote é'), (None, None), (-1, None)]
    assert json.loads(got[0][2]) == {"a": [1, "x", None]}
    assert got[1][2] is None and got[2][2] is None
