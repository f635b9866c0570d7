"""Processing rules: order, removal, the process-type state machine, admin actions (CONTRACT §4)."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus, ProcessType, TaskDataType, TaskType
from tests.helpers import (
    CONNECTOR,
    Clock,
    DictConnector,
    add_connector,
    connector_id,
    corrupt,
    log,
    membership,
    object_id,
    pending,
    put,
    role,
    run,
    user,
)

SIMPLE_SNAPSHOT = TaskDataType.SIMPLE_SNAPSHOT


@pytest.fixture
def conn(bus: IntegrationBus) -> DictConnector:
    """A connector, user alice, and translations for a membership of alice in role "editors".

    The role does not exist, so ``log_failing`` logs a task that fails until ``fix`` creates it.
    """
    c = add_connector(bus)
    put(bus, user("alice"))
    c.knows("cms.user", 1, "alice")
    c.knows("cms.role", 2, "editors", site="main")
    return c


def log_failing(bus: IntegrationBus, process_type: ProcessType = ProcessType.DEFAULT) -> int:
    return log(bus, membership(1, 2), data_type=SIMPLE_SNAPSHOT, process_type=process_type)


def fix(bus: IntegrationBus) -> None:
    """Create the missing role through another connector (its queue is independent)."""
    add_connector(bus, "Fixer")
    put(bus, role("editors"), connector="Fixer")


def is_member(bus: IntegrationBus) -> bool:
    rows = bus.find_objects("cms.userrole", user_id=object_id(bus, "cms.user", "alice"))
    return len(rows) == 1


def exists(bus: IntegrationBus, user_name: str) -> bool:
    return bus.get_object("cms.user", user_name) is not None


def _age_log(bus: IntegrationBus, task_id: int) -> None:
    """Move the task's log entries back in time, as if a second had passed."""
    with bus.engine.begin() as c:
        for log_id, time in c.execute(
            sa.text("SELECT log_id, time FROM syncbus_sync_log WHERE task_id = :t"),
            {"t": task_id},
        ).all():
            if isinstance(time, str):  # SQLite without type information
                time = dt.datetime.fromisoformat(time)
            c.execute(
                sa.text("UPDATE syncbus_sync_log SET time = :time WHERE log_id = :id"),
                {"time": time - dt.timedelta(seconds=2), "id": log_id},
            )


def error_of(bus: IntegrationBus, task_id: int) -> str:
    info = bus.get_task(task_id)
    assert info is not None
    assert info.error_message
    return info.error_message


# -- order and removal -------------------------------------------------------------------------


def test_tasks_run_in_ascending_order(bus: IntegrationBus) -> None:
    add_connector(bus)
    ids = [
        log(bus, user("alice", email=f"a{i}@example.com"), TaskType.UPDATE_OBJECT) for i in range(5)
    ]
    assert pending(bus) == sorted(ids)
    run(bus)
    assert bus.get_object("cms.user", "alice")["email"] == "a4@example.com"


def test_delete_and_recreate_follow_the_queue_order(bus: IntegrationBus) -> None:
    add_connector(bus)
    log(bus, user("alice", email="1@example.com"))
    log(bus, user("alice"), TaskType.DELETE_OBJECT)
    log(bus, user("alice", email="2@example.com"))
    log(bus, user("bob"))
    log(bus, user("bob"), TaskType.DELETE_OBJECT)
    run(bus)
    assert bus.get_object("cms.user", "alice")["email"] == "2@example.com"
    assert not exists(bus, "bob")


def test_a_reference_translated_before_its_object_went_is_translated_again(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """The batch's prefetch translates the binding's role to the role's id; an earlier task
    of the same batch then deletes the role and creates it again, with a new id. The binding
    must point at the new role (a translation kept from the prefetch would name the old id:
    a foreign-key failure, or a binding to nothing on SQLite without cascades)."""
    put(bus, role("editors"))
    put(bus, role("writers"))  # so that SQLite does not give the new role the old id again
    old = object_id(bus, "cms.role", "editors", site="main")
    log(bus, role("editors"), TaskType.DELETE_OBJECT)
    log(bus, role("editors", role_display_name="Editors again"))
    log(bus, membership(1, 2), data_type=SIMPLE_SNAPSHOT)
    result = run(bus)
    assert (result.applied, result.failed) == (3, 0), bus.task_log(pending(bus)[0])
    new = object_id(bus, "cms.role", "editors", site="main")
    assert new != old
    rows = bus.find_objects("cms.userrole", user_id=object_id(bus, "cms.user", "alice"))
    assert [r["role_id"] for r in rows] == [new]


def test_applied_tasks_are_removed(bus: IntegrationBus) -> None:
    add_connector(bus)
    ids = [log(bus, user(name)) for name in ("alice", "bob", "carol")]
    result = run(bus)
    assert result.applied == 3
    assert result.failed == 0
    assert not result.stopped
    assert pending(bus) == []
    assert all(bus.get_task(i) is None for i in ids)
    assert all(exists(bus, name) for name in ("alice", "bob", "carol"))


# -- DEFAULT and ERROR -------------------------------------------------------------------------


def test_default_failure_sets_error_logs_it_and_stops(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    before = log(bus, user("bob"))
    failing = log_failing(bus)
    after = log(bus, user("carol"))
    result = run(bus)
    assert result.stopped
    assert result.applied == 1
    assert result.failed == 1
    assert result.error and "Cannot translate columns" in result.error
    assert bus.get_task(before) is None
    info = bus.get_task(failing)
    assert info is not None
    assert info.process_type is ProcessType.ERROR
    assert "Cannot translate columns" in error_of(bus, failing)
    log_entries = bus.task_log(failing)
    assert len(log_entries) == 1
    assert "Cannot translate columns" in log_entries[0].error_message
    assert pending(bus) == [failing, after]
    assert not exists(bus, "carol")


def test_untranslatable_foreign_key_message_names_the_column(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    failing = log_failing(bus)
    run(bus)
    message = error_of(bus, failing)
    assert "Cannot translate columns" in message
    assert "role_id" in message


def test_error_task_blocks_later_runs_even_after_the_cause_is_fixed(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    failing = log_failing(bus)
    after = log(bus, user("carol"))
    run(bus)
    fix(bus)
    for _ in range(2):
        result = run(bus)
        assert result.stopped
        assert result.applied == 0
    assert pending(bus) == [failing, after]
    assert bus.get_task(failing).process_type is ProcessType.ERROR
    assert not is_member(bus)
    assert not exists(bus, "carol")


# -- SKIP_ONCE ---------------------------------------------------------------------------------


def test_skip_once_is_not_run_and_becomes_default(bus: IntegrationBus) -> None:
    add_connector(bus)
    skipped = log(bus, user("bob"), process_type=ProcessType.SKIP_ONCE)
    nxt = log(bus, user("carol"))
    result = run(bus)
    assert not result.stopped
    assert exists(bus, "carol")
    assert not exists(bus, "bob")
    assert bus.get_task(nxt) is None
    info = bus.get_task(skipped)
    assert info is not None
    assert info.process_type is ProcessType.DEFAULT
    run(bus)
    assert exists(bus, "bob")
    assert pending(bus) == []


# -- SKIP_ON_ERROR -----------------------------------------------------------------------------


def test_skip_on_error_logs_the_error_keeps_the_task_and_goes_on(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    failing = log_failing(bus, ProcessType.SKIP_ON_ERROR)
    nxt = log(bus, user("carol"))
    result = run(bus)
    assert not result.stopped
    assert result.failed == 1
    assert bus.get_task(nxt) is None
    assert exists(bus, "carol")
    info = bus.get_task(failing)
    assert info is not None
    assert info.process_type is ProcessType.SKIP_ON_ERROR
    assert "Cannot translate columns" in error_of(bus, failing)
    assert len(bus.task_log(failing)) == 1


def test_skip_on_error_is_retried_and_succeeds_once_fixed(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    clock = Clock(bus)
    failing = log_failing(bus, ProcessType.SKIP_ON_ERROR)
    run(bus)
    clock.advance(11)  # past its first back-off (retry_delay 10 s, up to 10 % jitter)
    run(bus)
    assert len(bus.task_log(failing)) == 2
    fix(bus)
    clock.advance(22)  # past the second (doubled)
    result = run(bus)
    assert result.applied == 1
    assert bus.get_task(failing) is None
    assert is_member(bus)


# -- DELETE_ON_ERROR ---------------------------------------------------------------------------


def test_delete_on_error_deletes_the_task_goes_on_and_reports_the_error(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    failing = log_failing(bus, ProcessType.DELETE_ON_ERROR)
    nxt = log(bus, user("carol"))
    result = run(bus)
    assert not result.stopped
    assert bus.get_task(failing) is None
    assert bus.get_task(nxt) is None
    assert exists(bus, "carol")
    assert not is_member(bus)
    assert any("Cannot translate columns" in e.message for e in bus.event_log())


# -- synchronize_task and delete_task ----------------------------------------------------------


def test_synchronize_runs_an_error_task_once_fixed(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    failing = log_failing(bus)
    run(bus)
    fix(bus)
    assert bus.synchronize_task(failing) is True
    assert bus.get_task(failing) is None
    assert is_member(bus)


def test_synchronize_runs_a_skip_once_task_now(bus: IntegrationBus) -> None:
    add_connector(bus)
    skipped = log(bus, user("bob"), process_type=ProcessType.SKIP_ONCE)
    assert bus.synchronize_task(skipped) is True
    assert bus.get_task(skipped) is None
    assert exists(bus, "bob")


def test_synchronize_runs_a_task_out_of_order(bus: IntegrationBus, conn: DictConnector) -> None:
    failing = log_failing(bus)
    behind = log(bus, user("carol"))
    run(bus)
    assert bus.synchronize_task(behind) is True
    assert exists(bus, "carol")
    assert pending(bus) == [failing]


def test_synchronize_failure_keeps_the_process_type_and_logs_it(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """CONTRACT §4: a failed manual synchronize keeps the process type (DEFAULT becomes
    ERROR: see test_synchronize_failure_of_a_default_task_makes_it_an_error)."""
    failing = log_failing(bus, ProcessType.SKIP_ON_ERROR)
    assert bus.synchronize_task(failing) is False
    assert bus.get_task(failing).process_type is ProcessType.SKIP_ON_ERROR
    assert "Cannot translate columns" in error_of(bus, failing)
    assert len(bus.task_log(failing)) == 1


def test_synchronize_failure_of_a_default_task_makes_it_an_error(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    failing = log(bus, membership(1, 2), data_type=SIMPLE_SNAPSHOT)
    assert bus.synchronize_task(failing) is False
    assert bus.get_task(failing).process_type is ProcessType.ERROR
    assert len(bus.task_log(failing)) == 1


def test_delete_task_removes_it_and_unblocks_the_queue(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    failing = log_failing(bus)
    after = log(bus, user("carol"))
    run(bus)
    bus.delete_task(failing)
    assert bus.get_task(failing) is None
    assert pending(bus) == [after]
    run(bus)
    assert exists(bus, "carol")
    assert not is_member(bus)


def test_deleted_task_is_never_applied(bus: IntegrationBus) -> None:
    add_connector(bus)
    task_id = log(bus, user("bob"))
    bus.delete_task(task_id)
    run(bus)
    assert not exists(bus, "bob")


# -- switches ----------------------------------------------------------------------------------


def test_disabled_connector_tasks_wait(bus: IntegrationBus) -> None:
    add_connector(bus)
    task_id = log(bus, user("bob"))
    bus.set_connector_enabled(CONNECTOR, False)
    bus.process_tasks()
    run(bus)
    assert pending(bus) == [task_id]
    assert not exists(bus, "bob")
    bus.set_connector_enabled(CONNECTOR, True)
    run(bus)
    assert exists(bus, "bob")
    assert pending(bus) == []


@pytest.mark.parametrize("ordering", ["connector", "entity"])
@pytest.mark.parametrize("switch", ["disable", "process_external", "integration_enabled"])
def test_switching_off_during_a_run_ends_it_after_the_batch_in_hand(
    db_url: str, ordering: str, switch: str
) -> None:
    """A new operator's trial: disabling a connector (or switching processing off) while a
    run drained a backlog did nothing until the queue was empty."""
    from tests.seq import SeqLanesConnector, make_bus

    bus = make_bus(db_url, batch_size=10)
    name = "Seq"
    if ordering == "entity":
        bus.register_connector(SeqLanesConnector)
        name = SeqLanesConnector.connector_name
    try:
        for n in range(100):
            bus.process_external_task(name, {"key": f"k{n}", "n": n})
        batches = []

        def switch_off(result: object) -> None:
            batches.append(result)
            if len(batches) == 2:  # from another connection, as an operator would
                with IntegrationBus(db_url) as operator:
                    if switch == "disable":
                        operator.set_connector_enabled(name, False)
                    else:
                        setattr(operator.settings, switch, False)

        result = bus.process_tasks(name, on_progress=switch_off)[name]
        assert result.applied == 20 and not result.stopped  # two batches of 10, then it ended
        assert len(bus.list_tasks(connector_name=name)) == 80
        if switch == "disable":
            bus.set_connector_enabled(name, True)
        else:
            setattr(bus.settings, switch, True)
        assert bus.process_tasks(name)[name].applied == 80
    finally:
        bus.close()


@pytest.mark.parametrize("switch", ["disable", "process_external"])
def test_a_run_that_starts_after_a_switch_went_off_applies_nothing(
    bus: IntegrationBus, switch: str
) -> None:
    """A worker's run starts without ``process_tasks``'s own look at the switches: the run
    looks before its first batch (claimed with the lease), and ends without it."""
    add_connector(bus)
    task_id = log(bus, user("bob"))
    cid = connector_id(bus)
    if switch == "disable":
        bus.set_connector_enabled(CONNECTOR, False)
    else:
        bus.settings.process_external = False
    result = bus.runner.run(cid, CONNECTOR)
    assert result.applied == 0 and result.failed == 0 and not result.stopped
    assert pending(bus) == [task_id]
    assert not exists(bus, "bob")
    if switch == "disable":
        bus.set_connector_enabled(CONNECTOR, True)
    else:
        bus.settings.process_external = True
    assert bus.runner.run(cid, CONNECTOR).applied == 1  # the lease was given back
    assert exists(bus, "bob")


def test_disabled_connector_reports_why_it_did_not_run(bus: IntegrationBus) -> None:
    add_connector(bus)
    log(bus, user("bob"))
    bus.set_connector_enabled(CONNECTOR, False)
    result = run(bus)
    assert result.not_run_reason
    assert result.applied == 0


@pytest.mark.parametrize("setting", ["process_external", "integration_enabled"])
def test_processing_switched_off_tasks_wait(bus: IntegrationBus, setting: str) -> None:
    add_connector(bus)
    task_id = log(bus, user("bob"))
    setattr(bus.settings, setting, False)
    bus.process_tasks()
    result = run(bus)
    assert result.applied == 0
    assert result.not_run_reason
    assert pending(bus) == [task_id]
    assert not exists(bus, "bob")
    setattr(bus.settings, setting, True)
    run(bus)
    assert exists(bus, "bob")
    assert pending(bus) == []


# -- several connectors ------------------------------------------------------------------------


def test_connectors_are_independent(bus: IntegrationBus, conn: DictConnector) -> None:
    add_connector(bus, "Other")
    failing = log_failing(bus)
    other = log(bus, user("carol"), connector="Other")
    results = bus.process_tasks()
    assert results[CONNECTOR].stopped
    assert results["Other"].applied == 1
    assert bus.get_task(failing).process_type is ProcessType.ERROR
    assert bus.get_task(other) is None
    assert exists(bus, "carol")


def test_process_tasks_without_argument_processes_every_connector(bus: IntegrationBus) -> None:
    add_connector(bus)
    add_connector(bus, "Other")
    log(bus, user("bob"))
    log(bus, user("carol"), connector="Other")
    results = bus.process_tasks()
    assert results[CONNECTOR].applied == 1
    assert results["Other"].applied == 1
    assert exists(bus, "bob")
    assert exists(bus, "carol")
    assert pending(bus) == []


# -- corrupt rows ------------------------------------------------------------------------------


def test_corrupt_task_fails_clearly_and_others_still_run(bus: IntegrationBus) -> None:
    add_connector(bus)
    bad = log(bus, user("bob"), process_type=ProcessType.SKIP_ON_ERROR)
    good = log(bus, user("carol"))
    corrupt(bus, bad)
    result = run(bus)
    assert result.failed == 1
    assert bus.get_task(good) is None
    assert exists(bus, "carol")
    assert not exists(bus, "bob")
    assert pending(bus) == [bad]
    assert bus.task_log(bad)
    message = error_of(bus, bad).lower()
    assert any(word in message for word in ("data", "corrupt", "json"))


def test_corrupt_default_task_stops_and_can_be_deleted(bus: IntegrationBus) -> None:
    add_connector(bus)
    bad = log(bus, user("bob"))
    good = log(bus, user("carol"))
    corrupt(bus, bad, '{"v": 1}')
    result = run(bus)
    assert result.stopped
    assert bus.get_task(bad).process_type is ProcessType.ERROR
    assert error_of(bus, bad)
    assert pending(bus) == [bad, good]
    bus.delete_task(bad)
    run(bus)
    assert exists(bus, "carol")
    assert pending(bus) == []


def test_a_simple_task_pointing_at_no_object_says_which_column_and_what_to_do(
    bus: IntegrationBus,
) -> None:
    """A Simple task's reference columns hold internal ids as given: one naming ids no object
    has fails on the foreign key, and its error names each such column and value and says that
    SimpleSnapshot has the connector translate external ids (a new user's likeliest mistake);
    the task behind it is not held up when it may be skipped."""
    add_connector(bus)
    put(bus, user("alice"))
    alice = object_id(bus, "cms.user", "alice")
    bad = log(bus, membership(alice, 987654), process_type=ProcessType.SKIP_ON_ERROR)
    behind = log(bus, user("bob"))
    result = run(bus)
    assert result.failed == 1 and result.applied == 1
    task = bus.get_task(bad)
    assert task is not None and task.error_message is not None
    message = task.error_message
    assert "role_id = 987654 (no cms.role has that id)" in message
    assert "user_id =" not in message  # alice exists
    assert "SimpleSnapshot" in message
    assert bus.get_task(behind) is None and exists(bus, "bob")
