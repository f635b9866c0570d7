"""History and lineage (CONTRACT §10), on both databases: a task leaves the queue but not the
record; what the record holds in each state; the tasks that wrote an object; edit and replay
in place; retention."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncbus import (
    IntegrationBus,
    InvalidObjectError,
    Ordering,
    ProcessType,
    SyncBusError,
    TaskDataType,
    TaskNotFoundError,
    TaskType,
    TranslationError,
)
from syncbus.store.db import utcnow
from tests.behaviour.test_intake_hardening import HARD, item, typed_values
from tests.helpers import (
    DictConnector,
    add_connector,
    ext,
    log,
    membership,
    object_id,
    pending,
    put,
    role,
    run,
    user,
)

SNAP = TaskDataType.SIMPLE_SNAPSHOT
UPDATE = TaskType.UPDATE_OBJECT
DELETE = TaskType.DELETE_OBJECT


@pytest.fixture
def conn(bus: IntegrationBus) -> DictConnector:
    return add_connector(bus)


def task_row(bus: IntegrationBus, task_id: int) -> dict[str, Any]:
    """Everything the queue stores of a task (to prove that a refused replace changed nothing)."""
    with bus.engine.connect() as c:
        row = c.execute(
            sa.text("SELECT * FROM syncbus_task WHERE task_id = :t"), {"t": task_id}
        ).mappings()
        return dict(row.one())


def records(bus: IntegrationBus) -> list[tuple[int, str]]:
    with bus.engine.connect() as c:
        rows = c.execute(sa.text("SELECT task_id, state FROM syncbus_history ORDER BY task_id"))
        return [(int(t), str(s)) for t, s in rows]


# -- what a record holds ----------------------------------------------------------------------
def test_a_task_answers_while_queued_and_after_it_was_applied(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    task_id = log(bus, user("alice", email="a@x.org"))
    queued = bus.task_history(task_id)
    assert queued is not None
    assert (queued.state, queued.finished_at, queued.changes) == ("queued", None, None)
    assert queued.external == user("alice", email="a@x.org")
    assert queued.internal["data"] == {"user_name": "alice", "email": "a@x.org"}
    assert queued.code_name == "alice" and queued.errors == []

    run(bus)
    assert bus.get_task(task_id) is None  # gone from the queue...
    done = bus.task_history(task_id)  # ...but not from the record
    assert done is not None
    assert done.state == "applied"
    assert done.finished_at is not None and done.finished_at >= done.logged_at
    assert done.external == queued.external and done.internal == queued.internal
    assert done.logged_at == queued.logged_at
    assert done.title == queued.title and done.connector_name == conn.connector_name
    new_id = object_id(bus, "cms.user", "alice")
    assert done.changes is not None
    assert done.changes["user_name"] == [None, "alice"]
    assert done.changes["email"] == [None, "a@x.org"]
    assert done.changes["user_id"] == [None, new_id]
    assert bus.task_history(10**9) is None


def test_the_diff_of_an_update_lists_only_the_columns_it_changed(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    put(bus, user("bob", email="b@x.org", first_name="Bob", last_name="Builder"))
    same_batch = [
        log(bus, user("bob", email="new@x.org", first_name="Bob"), UPDATE),
        log(bus, user("bob", email="new@x.org", first_name="Robert"), UPDATE),
        log(bus, user("bob", email="new@x.org"), UPDATE),  # changes nothing
    ]
    run(bus)
    changes = [bus.task_history(t).changes for t in same_batch]  # type: ignore[union-attr]
    # Each diff is against the row as the task before it in the same batch left it.
    assert changes == [
        {"email": ["b@x.org", "new@x.org"]},
        {"first_name": ["Bob", "Robert"]},
        {},
    ]
    # And across batches (the row read from the database, not a batch's cache).
    later = log(bus, user("bob", last_name="B."), UPDATE)
    run(bus)
    assert bus.task_history(later).changes == {"last_name": ["Builder", "B."]}  # type: ignore[union-attr]


def test_a_delete_records_the_row_that_went(bus: IntegrationBus, conn: DictConnector) -> None:
    put(bus, user("carol", email="c@x.org"))
    task_id = log(bus, user("carol"), DELETE)
    run(bus)
    record = bus.task_history(task_id)
    assert record is not None and record.state == "applied"
    assert record.changes is not None
    assert record.changes["email"] == ["c@x.org", None]
    assert record.changes["user_name"] == ["carol", None]


def test_translations_show_what_was_looked_for_and_what_it_resolved_to(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    put(bus, user("dave"))
    put(bus, role("editor"))
    conn.knows("cms.user", 7, "dave")
    conn.knows("cms.role", 8, "editor", site="main")
    task_id = log(bus, membership(7, 8), data_type=SNAP)
    before = bus.task_history(task_id)
    assert before is not None
    by_column = {t["column"]: t for t in before.translations}
    assert set(by_column) == {"user_id", "role_id"}
    assert by_column["user_id"]["external_id"] == 7
    assert by_column["user_id"]["identity"]["code_name"] == "dave"
    assert by_column["role_id"]["identity"] == {
        "object_type": "cms.role",
        "code_name": "editor",
        "site_name": "main",
    }
    assert all(t["internal_id"] is None for t in before.translations)  # not applied yet

    run(bus)
    after = bus.task_history(task_id)
    assert after is not None and after.state == "applied"
    resolved = {t["column"]: t["internal_id"] for t in after.translations}
    assert resolved == {
        "user_id": object_id(bus, "cms.user", "dave"),
        "role_id": object_id(bus, "cms.role", "editor", "main"),
    }
    assert after.changes is not None
    assert after.changes["user_id"] == [None, resolved["user_id"]]


def test_a_failed_task_is_failed_with_its_errors_then_applied_keeps_them(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    conn.knows("cms.user", 1, "erin")
    conn.knows("cms.role", 2, "admin", site="main")
    task_id = log(bus, membership(1, 2), data_type=SNAP)
    run(bus)
    failed = bus.task_history(task_id)
    assert failed is not None and failed.state == "failed"
    assert len(failed.errors) == 1 and "Cannot translate columns" in failed.errors[0].error_message
    add_connector(bus, "Other")  # its queue is stopped by the failure: fix through another
    put(bus, user("erin"), connector="Other")
    put(bus, role("admin"), connector="Other")
    assert bus.synchronize_task(task_id)
    done = bus.task_history(task_id)
    assert done is not None and done.state == "applied"
    assert [e.error_message for e in done.errors] == [e.error_message for e in failed.errors]
    assert done.changes is not None and "user_id" in done.changes


def test_a_dropped_task_keeps_the_error_that_dropped_it(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    conn.knows("cms.user", 1, "nobody")
    conn.knows("cms.role", 2, "none", site="main")
    dropped = log(bus, membership(1, 2), data_type=SNAP, process_type=ProcessType.DELETE_ON_ERROR)
    after = log(bus, user("frank"))  # the queue goes on behind it
    run(bus)
    assert pending(bus) == []
    record = bus.task_history(dropped)
    assert record is not None and record.state == "dropped"
    assert record.changes is None
    assert len(record.errors) == 1 and "Cannot translate columns" in record.errors[0].error_message
    assert bus.task_history(after).state == "applied"  # type: ignore[union-attr]


def test_a_task_deleted_by_an_operator_is_recorded_as_deleted(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    task_id = log(bus, user("gina"), process_type=ProcessType.ERROR)
    bus.delete_task(task_id)
    record = bus.task_history(task_id)
    assert record is not None and record.state == "deleted" and record.changes is None
    assert record.external == user("gina")
    gone, busy = bus.delete_tasks([log(bus, user("h1")), log(bus, user("h2"))])
    assert (gone, busy) == (2, set())
    assert [s for _, s in records(bus)] == ["deleted"] * 3


class EntityConnector(DictConnector):
    ordering = Ordering.ENTITY


def test_a_waiting_task_says_so(bus: IntegrationBus) -> None:
    lanes = EntityConnector("Lanes")
    bus.register_connector(lanes)
    lanes.knows("cms.user", 1, "ghost")
    lanes.knows("cms.role", 2, "ghost-role", site="main")
    put(bus, role("ghost-role"), connector="Lanes")
    task_id = log(bus, membership(1, 2), connector="Lanes", data_type=SNAP)
    run(bus, "Lanes")
    record = bus.task_history(task_id)
    assert record is not None and record.state == "waiting"
    assert record.lane is not None


def test_object_history_lists_the_tasks_that_wrote_it_newest_first(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    first = log(bus, user("ivy", email="1@x"))
    other = log(bus, user("jack"))
    second = log(bus, user("ivy", email="2@x"), UPDATE)
    run(bus)
    history = bus.object_history("cms.user", "ivy")
    assert [r.task_id for r in history] == [second, first]
    assert all(r.state == "applied" for r in history)
    assert history[0].changes == {"email": ["1@x", "2@x"]}
    assert [r.task_id for r in bus.object_history("cms.user", "jack")] == [other]
    assert bus.object_history("cms.user", "nobody") == []
    with pytest.raises(SyncBusError):
        bus.object_history("no.such.type", "x")
    # A binding is named by its ends (a new user's trial got [] for every guess).
    with pytest.raises(
        SyncBusError,
        match=r"cms\.userrole is a binding type.*\(cms\.role/<code>@<site>,cms\.user/<code>\)",
    ):
        bus.object_history("cms.userrole", "jack/ops")


def test_object_history_of_a_binding_by_its_two_ends(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    conn.knows("cms.user", 1, "dan")
    conn.knows("cms.role", 2, "ops", site="main")
    put(bus, user("dan"))
    put(bus, role("ops"))
    first = log(bus, membership(1, 2), data_type=SNAP)
    run(bus)
    dan_ops = "(cms.role/ops@main,cms.user/dan)"  # the ends in column order: role_id, user_id
    assert bus.task_history(first).code_name == dan_ops  # type: ignore[union-attr]
    gone = log(bus, membership(1, 2), TaskType.DELETE_OBJECT, data_type=SNAP)
    run(bus)
    assert [r.task_id for r in bus.object_history("cms.userrole", dan_ops)] == [gone, first]
    assert bus.object_history("cms.userrole", "(cms.role/ops@main,cms.user/nobody)") == []
    # A task logged as Simple names its ends by the ids it was given.
    ids = (object_id(bus, "cms.user", "dan"), object_id(bus, "cms.role", "ops", site="main"))
    simple = log(bus, membership(*ids))
    run(bus)
    record = bus.task_history(simple)
    assert record is not None and record.state == "applied"
    assert record.code_name is not None and record.code_name.startswith("(cms.role#")
    assert [r.task_id for r in bus.object_history("cms.userrole", record.code_name)] == [simple]


def test_object_history_of_a_site_bound_object_by_site(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    bus.create_site("other")
    on_main = log(bus, role("writer"), site="main")
    on_other = log(bus, role("writer"), site="other")
    run(bus)
    assert [r.task_id for r in bus.object_history("cms.role", "writer")] == [on_other, on_main]
    assert [r.task_id for r in bus.object_history("cms.role", "writer", "main")] == [on_main]


def test_each_applied_task_has_exactly_one_record_when_a_batch_is_replayed_carefully(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """A failure in the optimistic pass rolls the batch back and applies it again task by
    task: the records of the first pass go with its rollback."""
    conn.knows("cms.user", 1, "missing")
    conn.knows("cms.role", 2, "missing", site="main")
    ok = [log(bus, user(f"k{i}")) for i in range(3)]
    bad = log(bus, membership(1, 2), data_type=SNAP, process_type=ProcessType.SKIP_ON_ERROR)
    more = [log(bus, user(f"l{i}")) for i in range(3)]
    run(bus)
    assert records(bus) == [(i, "applied") for i in ok + more]
    assert bus.task_history(bad).state == "failed"  # type: ignore[union-attr]


# -- edit and replay --------------------------------------------------------------------------
def test_replace_keeps_the_task_id_place_and_errors_and_replays(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    conn.knows("cms.user", 1, "mia")
    conn.knows("cms.role", 2, "ops", site="main")
    put(bus, role("ops"))
    broken = log(bus, membership(1, 2), data_type=SNAP)  # its user does not exist
    behind = log(bus, user("nora"))
    run(bus)
    assert pending(bus) == [broken, behind]  # the DEFAULT failure stops the queue
    put_user = log(bus, user("mia"))
    assert pending(bus) == [broken, behind, put_user]
    errors_before = bus.task_log(broken)

    conn.knows("cms.user", 3, "nora")  # the fix: the membership is for nora, who is queued
    info = bus.replace_task_object(broken, membership(3, 2))
    assert info.task_id == broken
    assert pending(bus) == [broken, behind, put_user]  # same id, same place
    assert bus.task_log(broken) == errors_before  # the error history is kept
    record = bus.task_history(broken)
    assert record is not None and record.external == membership(3, 2)
    assert [t["identity"]["code_name"] for t in record.translations] == ["nora", "ops"]

    assert not bus.synchronize_task(broken)  # nora is still queued behind it: fails again
    run_after = bus.task_history(broken)
    assert run_after is not None and len(run_after.errors) == 2
    bus.replace_task_object(broken, membership(1, 2))  # back to mia, and mia goes first
    bus.delete_task(behind)
    assert bus.synchronize_task(put_user)
    assert bus.synchronize_task(broken)
    done = bus.task_history(broken)
    assert done is not None and done.state == "applied"
    assert done.external == membership(1, 2)
    assert len(done.errors) == 2


def test_a_replaced_failed_task_runs_at_the_queues_next_run(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """From a new user's trial: the fix of a failed task is its replacement; the queue it
    stopped goes on at its next run, without a synchronize (docs: edit and replay)."""
    conn.knows("cms.user", 1, "mia")
    conn.knows("cms.user", 4, "zoe")
    conn.knows("cms.role", 2, "ops", site="main")
    put(bus, role("ops"))
    put(bus, user("zoe"))
    broken = log(bus, membership(1, 2), data_type=SNAP)  # mia does not exist: it fails
    behind = log(bus, user("nora"))
    run(bus)
    failed = bus.get_task(broken)
    assert failed is not None and failed.process_type is ProcessType.ERROR
    assert failed.error_message is not None
    errors = bus.task_log(broken)
    run(bus)
    assert pending(bus) == [broken, behind]  # the ERROR task stops the queue

    conn.knows("cms.user", 3, "nora")
    info = bus.replace_task_object(broken, membership(3, 2))  # nora, logged behind it
    assert info.process_type is ProcessType.DEFAULT
    assert info.error_message == failed.error_message  # failed, until it runs again
    assert bus.task_log(broken) == errors
    bus.replace_task_object(behind, user("nora"))  # a queued task's type is left alone
    assert bus.get_task(behind).process_type is ProcessType.DEFAULT  # type: ignore[union-attr]
    run(bus)  # nora is still behind it: it fails again, and stops the queue again
    again = bus.get_task(broken)
    assert again is not None and again.process_type is ProcessType.ERROR
    assert len(bus.task_log(broken)) == len(errors) + 1

    bus.replace_task_object(broken, membership(4, 2))  # zoe, applied before it
    run(bus)
    assert pending(bus) == []  # it, then nora behind it
    done = bus.task_history(broken)
    assert done is not None and done.state == "applied"
    assert done.process_type is ProcessType.DEFAULT


@pytest.mark.parametrize(
    ("replacement", "error"),
    [
        (ext("cms.user", user_name="x", no_such_column=1), InvalidObjectError),
        (ext("cms.user", user_name=None), InvalidObjectError),
        (ext("no.such.type", a=1), SyncBusError),
        (membership(404, 2), TranslationError),  # the connector knows no user 404
    ],
)
def test_a_bad_replacement_changes_nothing(
    bus: IntegrationBus, conn: DictConnector, replacement: Any, error: type[Exception]
) -> None:
    conn.knows("cms.user", 1, "olga")
    conn.knows("cms.role", 2, "qa", site="main")
    task_id = log(bus, membership(1, 2), data_type=SNAP)
    run(bus)
    before = task_row(bus, task_id)
    with pytest.raises(error):
        bus.replace_task_object(task_id, replacement)
    assert task_row(bus, task_id) == before


def test_replace_of_a_task_that_left_the_queue_is_not_found(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    task_id = log(bus, user("pia"))
    run(bus)
    with pytest.raises(TaskNotFoundError):
        bus.replace_task_object(task_id, user("pia2"))
    with pytest.raises(TaskNotFoundError):
        bus.replace_task_object(10**9, user("x"))
    assert bus.get_object("cms.user", "pia2") is None


def test_a_replacement_the_connector_skips_changes_nothing(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    task_id = log(bus, user("quinn"), process_type=ProcessType.ERROR)
    before = task_row(bus, task_id)
    with pytest.raises(InvalidObjectError, match="skipped"):
        bus.replace_task_object(task_id, None)  # DictConnector prepares None as "skip"
    assert task_row(bus, task_id) == before


_n = itertools.count()


def test_an_old_value_json_cannot_hold_is_recorded_as_its_name(hard: IntegrationBus) -> None:
    """A float written outside the bus may be infinite, which JSON has no number for: the
    batch's records are still written (they travel as one JSON document), that value as
    "Infinity", and the task beside it keeps its own record."""
    put(hard, item(item_name="odd", ratio=1.0))
    with hard.engine.begin() as c:
        c.execute(sa.text("UPDATE hard_item SET ratio = :r"), {"r": float("inf")})
    task_id = log(hard, item(item_name="odd", ratio=2.5), UPDATE)
    beside = log(hard, item(item_name="plain", ratio=0.5))
    run(hard)
    record = hard.task_history(task_id)
    assert record is not None and record.state == "applied"
    assert record.changes == {"ratio": ["Infinity", 2.5]}
    other = hard.task_history(beside)
    assert other is not None and other.state == "applied"
    assert other.changes is not None and other.changes["ratio"] == [None, 0.5]


def test_the_diff_of_every_column_type_reads_back(hard: IntegrationBus) -> None:
    """Each column type's old and new value as JSON keeps them: numbers and booleans as
    such, text with quotes, backslashes and non-ASCII as written, times and dates as text,
    JSON values as JSON (a NUL in a string of one included, which PostgreSQL's JSON parser
    refuses)."""
    old = {
        "count": 1,
        "big": 2**40,
        "ratio": 0.25,
        "day": "2024-01-02",
        "at": "2024-01-02T03:04:05+00:00",
        "flag": False,
        "label": "a",
        "note": 'q"uote\\ é 😀',
        "extra": {"k": [1, "two", None]},
    }
    new = {
        "count": -7,
        "big": -(2**62),
        "ratio": 1e-300,
        "day": "2025-12-31",
        "at": "2025-12-31T23:59:59+00:00",
        "flag": True,
        "label": "b\n",
        "note": "ünïcode\x01",
        "extra": [{"deep": {"er": 1.5}}, "nul \x00 inside", 10**30],
    }
    put(hard, item(item_name="typed", **old))
    task_id = log(hard, item(item_name="typed", **new), UPDATE)
    run(hard)
    record = hard.task_history(task_id)
    assert record is not None and record.state == "applied" and record.changes is not None
    for column in ("count", "big", "ratio", "flag", "label", "note", "extra"):
        assert record.changes[column] == [old[column], new[column]], column
    assert str(record.changes["day"][1]).startswith("2025-12-31")
    assert str(record.changes["at"][1]).startswith("2025-12-31")
    assert set(record.changes) == set(new)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(column=st.sampled_from(sorted(set(HARD.columns) - {"item_name"})), value=typed_values)
def test_replace_with_any_value_of_any_column_is_refused_whole_or_replayed(
    hard: IntegrationBus, column: str, value: Any
) -> None:
    """Bad input over every column type: a replacement is refused with a clear error and
    changes nothing, or it is stored and the task then applies or fails alone, never
    stopping the task behind it (SKIP_ON_ERROR)."""
    bus = hard
    name = f"fz{next(_n)}"
    task_id = log(bus, item(item_name=name), process_type=ProcessType.SKIP_ON_ERROR)
    behind = log(bus, item(item_name=f"{name}-behind"))
    before = task_row(bus, task_id)
    try:
        bus.replace_task_object(task_id, item(**{"item_name": name, column: value}))
    except SyncBusError as exc:
        assert str(exc)  # says why
        assert task_row(bus, task_id) == before
        bus.delete_task(task_id)
    run(bus)
    assert bus.get_task(behind) is None  # the task behind it was never stopped
    record = bus.task_history(task_id)
    assert record is not None
    assert record.state in ("applied", "failed", "deleted")
    if record.state == "applied":
        assert record.changes is not None and "item_id" in record.changes
    bus.delete_tasks([task_id])


# -- retention --------------------------------------------------------------------------------
def age(bus: IntegrationBus, task_id: int, days: float) -> None:
    """Make a task's record look ``days`` old."""
    when = utcnow() - dt.timedelta(days=days)
    with bus.engine.begin() as c:
        c.execute(
            sa.text("UPDATE syncbus_history SET finished_at = :w WHERE task_id = :t"),
            {"w": when, "t": task_id},
        )


def test_retention_removes_old_records_and_nothing_else(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    old, young, edge = (log(bus, user(f"r{i}")) for i in range(3))
    queued = log(bus, user("r-queued"), process_type=ProcessType.ERROR)
    run(bus)
    age(bus, old, 8)
    age(bus, edge, 6.9)
    assert bus.settings.history_retention_days == 7
    assert bus.prune(batch=1) == (1, 0)  # bounded deletes of one row still get there
    assert bus.task_history(old) is None
    assert bus.task_history(young) is not None and bus.task_history(edge) is not None
    assert bus.task_history(queued).state == "failed"  # type: ignore[union-attr]
    assert bus.get_object("cms.user", "r0") is not None  # content is never pruned
    bus.settings.history_retention_days = 1
    assert bus.prune() == (1, 0)
    assert [t for t, _ in records(bus)] == [young]


def test_retention_zero_keeps_no_history(bus: IntegrationBus, conn: DictConnector) -> None:
    bus.settings.history_retention_days = 0
    task_id = log(bus, user("s"))
    run(bus)
    assert bus.task_history(task_id) is None
    assert records(bus) == []
    assert bus.get_object("cms.user", "s") is not None
    with pytest.raises(ValueError, match="whole number of days"):
        bus.settings.history_retention_days = -1
    with pytest.raises(ValueError, match="whole number of days"):
        bus.settings.history_retention_days = True  # type: ignore[assignment]


def test_idempotency_keys_are_forgotten_after_their_retention(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    done = log(bus, user("t1"), key="order-1")
    queued = log(bus, user("t2"), key="order-2", process_type=ProcessType.ERROR)
    run(bus)
    with bus.engine.begin() as c:  # both keys were first seen 8 days ago
        c.execute(
            sa.text("UPDATE syncbus_idempotency SET created_at = :w"),
            {"w": utcnow() - dt.timedelta(days=8)},
        )
    assert log(bus, user("t1"), key="order-1") == done  # remembered until pruned
    assert bus.prune() == (0, 1)  # the applied task's key goes; the queued task's stays
    again = log(bus, user("t1"), key="order-1")
    assert again != done  # a retry after the retention logs a new task (documented)
    assert log(bus, user("t2"), key="order-2") == queued


def test_a_record_keeps_the_idempotency_key_past_the_keys_retention(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """What its producer knows it by: the key, queued and finished, in every state a task
    leaves the queue in, and still there once the key itself was forgotten."""
    applied = log(bus, user("k1"), key="order-1")
    deleted = log(bus, user("k2"), key="order-2")
    plain = log(bus, user("k3"))
    record = bus.task_history(applied)
    assert record is not None and record.idempotency_key == "order-1" and not record.finished
    bus.delete_task(deleted)
    run(bus)
    with bus.engine.begin() as c:
        c.execute(
            sa.text("UPDATE syncbus_idempotency SET created_at = :w"),
            {"w": utcnow() - dt.timedelta(days=8)},
        )
    assert bus.prune() == (0, 2)  # both keys forgotten; the records stay
    for task_id, key, state in ((applied, "order-1", "applied"), (deleted, "order-2", "deleted")):
        record = bus.task_history(task_id)
        assert record is not None and (record.state, record.idempotency_key) == (state, key)
    record = bus.task_history(plain)
    assert record is not None and record.state == "applied" and record.idempotency_key is None
    (latest,) = bus.object_history("cms.user", "k1")
    assert latest.idempotency_key == "order-1"


def test_a_corrupt_task_dropped_leaves_a_readable_record(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    from tests.helpers import corrupt

    task_id = log(bus, user("zed"), process_type=ProcessType.DELETE_ON_ERROR)
    behind = log(bus, user("zoe"))
    corrupt(bus, task_id)
    run(bus)
    record = bus.task_history(task_id)
    assert record is not None and record.state == "dropped"
    assert record.internal == {} and record.translations == []
    assert record.external == user("zed")  # what was logged is still there to read
    assert "corrupt task" in record.errors[-1].error_message
    assert bus.task_history(behind).state == "applied"  # type: ignore[union-attr]
