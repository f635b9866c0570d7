"""Retries with back-off (CONTRACT §9): a SKIP_ON_ERROR task that failed waits retry_delay
seconds, doubled after each failed attempt, capped at retry_max_delay; each attempt writes one
log entry; synchronize_task ignores the back-off; the queue goes on meanwhile. Time moves by
an injected clock, never by sleeping (but for the dispatcher's wake-up, which is real time)."""

from __future__ import annotations

import pytest

from syncbus import ConnectorLoadError, IntegrationBus, Ordering, ProcessType, TaskDataType
from syncbus.dispatcher import Dispatcher
from syncbus.policies import JITTER, ConnectorRules
from tests.helpers import (
    Clock,
    DictConnector,
    add_connector,
    log,
    membership,
    pending,
    role,
    run,
    user,
    wait_for,
)

SNAP = TaskDataType.SIMPLE_SNAPSHOT


class Capped(DictConnector):
    retry_delay = 10.0
    retry_max_delay = 30.0


def failing(bus: IntegrationBus, conn: DictConnector, **kw: object) -> int:
    """A SKIP_ON_ERROR membership whose user and role do not exist (yet)."""
    conn.knows("cms.user", 1, "alice")
    conn.knows("cms.role", 2, "admin", site="main")
    return log(
        bus,
        membership(1, 2),
        data_type=SNAP,
        process_type=ProcessType.SKIP_ON_ERROR,
        connector=conn.connector_name,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def delay_of(bus: IntegrationBus, task_id: int, clock: Clock) -> float:
    info = bus.get_task(task_id)
    assert info is not None and info.next_attempt_at is not None
    return (info.next_attempt_at - clock.now).total_seconds()


def test_the_delay_doubles_from_retry_delay_and_is_capped(bus: IntegrationBus) -> None:
    conn = Capped("Capped")
    bus.register_connector(conn)
    clock = Clock(bus)
    task = failing(bus, conn)
    expected = [10.0, 20.0, 30.0, 30.0]  # doubled, then capped at retry_max_delay
    for attempt, base in enumerate(expected, start=1):
        assert run(bus, "Capped").failed == 1
        info = bus.get_task(task)
        assert info is not None and info.attempts == attempt
        delay = delay_of(bus, task, clock)
        assert base <= delay <= min(base * (1 + JITTER), 30.0) + 1e-6, (attempt, delay)
        assert len(bus.task_log(task)) == attempt  # one entry per attempt
        clock.advance(delay - 0.5)  # not yet: the run passes it
        assert run(bus, "Capped").failed == 0
        assert len(bus.task_log(task)) == attempt
        clock.advance(1.0)


def test_the_queue_goes_on_while_a_task_backs_off(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    Clock(bus)
    task = failing(bus, conn)
    assert run(bus).failed == 1
    later = log(bus, user("bob"))
    result = run(bus)
    assert (result.applied, result.failed) == (1, 0)
    assert pending(bus) == [task] and later not in pending(bus)


def test_a_fixed_task_succeeds_at_its_next_attempt(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    clock = Clock(bus)
    task = failing(bus, conn)
    run(bus)
    log(bus, user("alice"))
    log(bus, role("admin"))
    assert run(bus).applied == 2 and pending(bus) == [task]  # its time has not come
    clock.advance(11)
    assert run(bus).applied == 1 and pending(bus) == []


def test_synchronize_ignores_the_back_off_and_counts_the_attempt(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    clock = Clock(bus)
    task = failing(bus, conn)
    run(bus)
    assert bus.synchronize_task(task) is False  # tried at once, whatever the back-off says
    info = bus.get_task(task)
    assert info is not None and info.attempts == 2 and len(bus.task_log(task)) == 2
    assert 20.0 <= delay_of(bus, task, clock) <= 20.0 * (1 + JITTER) + 1e-6
    log(bus, user("alice"))
    log(bus, role("admin"))
    run(bus)
    assert bus.synchronize_task(task) is True and pending(bus) == []


def test_other_process_types_never_back_off(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    conn.knows("cms.user", 1, "alice")
    conn.knows("cms.role", 2, "admin", site="main")
    task = log(bus, membership(1, 2), data_type=SNAP)  # DEFAULT: fails, becomes ERROR
    run(bus)
    info = bus.get_task(task)
    assert info is not None and info.process_type is ProcessType.ERROR
    assert (info.attempts, info.next_attempt_at) == (1, None)  # a failed attempt, no back-off


def test_under_entity_a_task_backing_off_lets_its_lane_go_on(bus: IntegrationBus) -> None:
    class Lanes(DictConnector):
        ordering = Ordering.ENTITY
        dependency_timeout = 0.0

    conn = Lanes("Lanes")
    bus.register_connector(conn)
    clock = Clock(bus)
    conn.knows("cms.user", 1, "alice")
    conn.knows("cms.role", 2, "admin", site="main")
    task = log(
        bus,
        membership(1, 2),
        data_type=SNAP,
        process_type=ProcessType.SKIP_ON_ERROR,
        connector="Lanes",
    )
    assert run(bus, "Lanes").failed == 1
    behind = log(bus, membership(1, 2), data_type=SNAP, connector="Lanes")  # same lane
    result = run(bus, "Lanes")
    # the task backing off is passed; the one behind it in its lane runs (and fails: DEFAULT)
    assert (result.failed, len(bus.task_log(task))) == (1, 1)
    assert bus.get_task(behind).process_type is ProcessType.ERROR  # type: ignore[union-attr]
    clock.advance(11)
    assert run(bus, "Lanes").failed == 1 and len(bus.task_log(task)) == 2


@pytest.mark.parametrize(
    ("attrs", "fragment"),
    [
        ({"retry_delay": -1.0}, "retry_delay must be a finite number of seconds >= 0"),
        ({"retry_max_delay": float("nan")}, "retry_max_delay must be a finite number"),
        ({"retry_delay": "10"}, "retry_delay must be a finite number"),
        ({"retry_delay": 100.0, "retry_max_delay": 10.0}, "longer than retry_max_delay"),
    ],
)
def test_bad_retry_settings_are_refused_by_name(
    bus: IntegrationBus, attrs: dict[str, object], fragment: str
) -> None:
    cls = type("BadRetry", (DictConnector,), attrs)
    with pytest.raises(ConnectorLoadError, match=fragment):
        bus.register_connector(cls("BadRetry"))


def test_the_rules_recorded_with_the_connector_bind_other_processes(db_url: str) -> None:
    first = IntegrationBus(db_url)
    first.create_schema()
    first.register_connector(Capped("Capped"))
    other = IntegrationBus(db_url)  # never imports the class
    try:
        from syncbus.store.connectors import connector_by_name

        with other.engine.connect() as c:
            rules = ConnectorRules.of(connector_by_name(c, "Capped"))
        assert (rules.retry_delay, rules.retry_max_delay) == (10.0, 30.0)
    finally:
        other.close()
        first.close()


def test_backoff_is_bounded_for_any_attempt_count() -> None:
    rules = ConnectorRules(retry_delay=0.5, retry_max_delay=7.0)
    assert rules.backoff(1, rand=0.0) == 0.5
    assert rules.backoff(2, rand=0.0) == 1.0
    assert rules.backoff(1, rand=1.0) == pytest.approx(0.55)
    assert rules.backoff(10_000, rand=1.0) == 7.0  # no overflow, capped
    assert ConnectorRules(retry_delay=0.0).backoff(5) == 0.0


def test_the_dispatcher_wakes_up_for_the_next_attempt(db_url: str) -> None:
    """No trigger, no scheduler, no polling: the run that failed the task tells the
    dispatcher when its next attempt is due, and it comes back then."""

    class Quick(DictConnector):
        retry_delay = 0.3
        retry_max_delay = 0.3

    bus = IntegrationBus(db_url)
    bus.create_schema()
    conn = Quick("Quick")
    bus.register_connector(conn)
    helper = add_connector(bus, "Helper")
    task = failing(bus, conn)
    dispatcher = Dispatcher(
        bus, scheduler_interval=None, poll_interval=3600, listen=False, initial_pass=False
    )
    dispatcher.start()
    try:
        dispatcher.trigger("Quick")
        wait_for(lambda: len(bus.task_log(task)) >= 1)
        # the missing user and role arrive through another connector; nothing triggers Quick
        log(bus, user("alice"), connector=helper.connector_name)  # type: ignore[arg-type]
        log(bus, role("admin"), connector=helper.connector_name)  # type: ignore[arg-type]
        wait_for(lambda: bus.get_task(task) is None, timeout=10)  # raises if never retried
    finally:
        dispatcher.stop()
        bus.close()
