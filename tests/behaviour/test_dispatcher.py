"""The dispatcher: triggers become runs; a trigger during a run is never lost or doubled."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

from syncbus import IntegrationBus, ProcessResult
from syncbus.dispatcher import Dispatcher
from tests.helpers import wait_for
from tests.seq import SeqConnector, SeqLanesConnector, make_bus
from tests.workers import assert_exactly_once_in_order, audit_rows, install_audit


@pytest.fixture
def pair(db_url: str):  # type: ignore[no-untyped-def]
    """A bus for the dispatcher and another for an outside program that logs tasks."""
    inside, outside = make_bus(db_url), make_bus(db_url)
    yield inside, outside
    inside.close()
    outside.close()


def quiet(bus: IntegrationBus, **kw) -> Dispatcher:  # type: ignore[no-untyped-def]
    """No scheduler, no polling, no LISTEN: only explicit triggers start runs."""
    return Dispatcher(
        bus, scheduler_interval=None, poll_interval=3600, listen=False, initial_pass=False, **kw
    )


def test_triggers_during_runs_are_never_lost(pair) -> None:  # type: ignore[no-untyped-def]
    inside, outside = pair
    results: list[ProcessResult] = []
    running = threading.Lock()
    overlaps: list[str] = []

    class Record:
        def run_finished(self, result: ProcessResult) -> None:
            results.append(result)

    inside.hooks.subscribe(Record())
    dispatcher = quiet(inside)
    original = inside.process_tasks

    late = iter(())

    def exclusive(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal late
        if not running.acquire(blocking=False):
            overlaps.append("two runs of one connector at once in one process")
            return original(*args, **kwargs)
        try:
            out = original(*args, **kwargs)
            # A task and its trigger arrive after the run's last look at the queue, while the
            # run is still "running": the trigger must make it take one more pass.
            n = next(late, None)
            if n is not None:
                outside.process_external_task("Seq", {"key": "late", "n": n})
                dispatcher.trigger("Seq")
                time.sleep(0.2)  # let the dispatcher see the trigger while this run is on
            return out
        finally:
            running.release()

    inside.process_tasks = exclusive  # type: ignore[method-assign]
    dispatcher.start()
    try:
        for n in range(1, 301):
            outside.process_external_task("Seq", {"key": "k", "n": n})
            dispatcher.trigger("Seq")  # many arrive while a run is going on
        wait_for(lambda: dispatcher.idle() and inside.queue_size("Seq") == 0, timeout=30)
        late = iter(range(1001, 1006))  # from now on, each run ends with a late arrival
        dispatcher.trigger("Seq")
        wait_for(lambda: dispatcher.idle() and inside.queue_size("Seq") == 0, timeout=30)
    finally:
        dispatcher.stop()
    assert overlaps == []
    assert inside.get_object("seq.counter", "k")["n"] == 300
    assert inside.get_object("seq.counter", "late")["n"] == 1005
    assert sum(r.applied for r in results) == 305
    assert len(results) < 300, "triggers during a run should coalesce into one more pass"


def test_trigger_all_runs_only_connectors_with_tasks(pair) -> None:  # type: ignore[no-untyped-def]
    inside, outside = pair
    ran: list[str] = []

    class Record:
        def run_finished(self, result: ProcessResult) -> None:
            ran.append(result.connector_name)

    inside.hooks.subscribe(Record())
    dispatcher = quiet(inside)
    outside.process_external_task("Seq", {"key": "a", "n": 1})
    dispatcher.start()
    try:
        dispatcher.trigger()
        wait_for(lambda: dispatcher.idle() and inside.queue_size() == 0)
    finally:
        dispatcher.stop()
    assert ran == ["Seq"]


def test_sqlite_poll_notices_tasks_other_processes_log(sqlite_url: str) -> None:
    url = sqlite_url
    inside, outside = make_bus(url), make_bus(url)
    dispatcher = Dispatcher(inside, scheduler_interval=None, poll_interval=0.1)
    dispatcher.start()
    try:
        outside.process_external_task("Seq", {"key": "polled", "n": 1})
        wait_for(lambda: inside.get_object("seq.counter", "polled") is not None, timeout=10)
    finally:
        dispatcher.stop()
        inside.close()
        outside.close()


def test_scheduler_runs_connectors_on_its_interval(pair) -> None:  # type: ignore[no-untyped-def]
    inside, outside = pair
    outside.process_external_task("Seq", {"key": "scheduled", "n": 1})
    dispatcher = Dispatcher(
        inside, scheduler_interval=0.2, poll_interval=3600, listen=False, initial_pass=False
    )
    dispatcher.start()
    try:
        wait_for(lambda: inside.get_object("seq.counter", "scheduled") is not None, timeout=10)
    finally:
        dispatcher.stop()


def test_busy_connector_is_retried_until_the_lease_is_free(db_url: str) -> None:
    inside = make_bus(db_url, lease_seconds=1.0)
    from syncbus.store import leases

    with inside.engine.begin() as conn:  # a dead runner's lease, 1 s long
        cid = conn.exec_driver_sql(
            "SELECT connector_id FROM syncbus_connector WHERE connector_name = 'Seq'"
        ).scalar_one()
        leases.ensure_lease_row(conn, cid)
        assert leases.acquire_lease(conn, cid, "dead-runner", 1.0)
    inside.process_external_task("Seq", {"key": "late", "n": 1})
    dispatcher = Dispatcher(
        inside, scheduler_interval=None, poll_interval=3600, listen=False, busy_retry=0.2
    )
    dispatcher.start()
    try:
        wait_for(lambda: inside.get_object("seq.counter", "late") is not None, timeout=15)
    finally:
        dispatcher.stop()
        inside.close()


def test_stop_is_prompt_when_a_run_waits_behind_busy_workers(db_url: str) -> None:
    """A run queued on the pool when stop() comes is cancelled, and must not count as in
    flight: stop() returns as soon as the run in hand ends, not after the whole grace period."""
    bus = make_bus(db_url)
    bus.register_connector(type("Seq2", (SeqConnector,), {"connector_name": "Seq2"}))
    started, release = threading.Event(), threading.Event()
    original = bus.process_tasks

    def slow(name, **kwargs):  # type: ignore[no-untyped-def]
        if name == "Seq":
            started.set()
            release.wait(10)
        return original(name, **kwargs)

    bus.process_tasks = slow  # type: ignore[method-assign]
    dispatcher = quiet(bus, workers=1)
    dispatcher.start()
    try:
        dispatcher.trigger("Seq")
        assert started.wait(10)
        dispatcher.trigger("Seq2")  # queued behind the one worker, which is busy
        wait_for(lambda: "Seq2" in dispatcher._running)
        threading.Timer(0.3, release.set).start()
        begun = time.monotonic()
        assert dispatcher.stop(timeout=20), "stop() counted the cancelled run as in flight"
        assert time.monotonic() - begun < 10
        assert dispatcher.idle()
    finally:
        release.set()
        bus.close()


def _counting_runs(bus: IntegrationBus) -> dict[str, int]:
    """Wrap process_tasks to record, per connector, the most runs ever in flight at once."""
    original = bus.process_tasks
    lock = threading.Lock()
    now: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)

    def counted(name, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            now[name] += 1
            most[name] = max(most[name], now[name])
        try:
            return original(name, **kwargs)
        finally:
            with lock:
                now[name] -= 1

    bus.process_tasks = counted  # type: ignore[method-assign]
    return most


@pytest.mark.postgres
def test_worker_threads_share_one_entity_connector(pg_url: str) -> None:
    """On PostgreSQL a trigger starts a run of an ENTITY connector per idle thread; a CONNECTOR
    connector never has two runs at once. Every task is applied once, each lane in order."""
    bus = make_bus(pg_url, batch_size=10)
    bus.register_connector(SeqLanesConnector)
    install_audit(bus.engine, sleep=0.002)  # applying is slow enough for runs to overlap
    expected: dict[str, list[int]] = defaultdict(list)
    for n in range(1, 301):
        bus.process_external_task("SeqLanes", {"key": f"e{n % 30}", "n": n})
        expected[f"e{n % 30}"].append(n)
        bus.process_external_task("Seq", {"key": "c", "n": n})
        expected["c"].append(n)
    most = _counting_runs(bus)
    dispatcher = quiet(bus, workers=4)
    dispatcher.start()
    try:
        dispatcher.trigger()
        wait_for(lambda: bus.queue_size() == 0 and dispatcher.idle(), timeout=60)
    finally:
        assert dispatcher.stop(timeout=20)
    assert_exactly_once_in_order(audit_rows(bus.engine), dict(expected))
    assert most["Seq"] == 1
    assert most["SeqLanes"] >= 2, dict(most)
    bus.close()


@pytest.mark.postgres
def test_extra_entity_runs_yield_a_thread_to_another_connector(pg_url: str) -> None:
    """An ENTITY connector holding every thread gives one back, after its batch in hand, when
    another connector's run waits for a thread."""
    bus = make_bus(pg_url, batch_size=5)
    bus.register_connector(SeqLanesConnector)
    release = threading.Event()
    original = bus.process_tasks
    started: list[str] = []

    def slow(name, **kwargs):  # type: ignore[no-untyped-def]
        started.append(name)
        if name == "SeqLanes":
            stop = kwargs.get("stop")
            while not release.is_set() and not (stop is not None and stop.is_set()):
                time.sleep(0.01)  # an endless run until it is asked to yield or stop
        return original(name, **kwargs)

    bus.process_tasks = slow  # type: ignore[method-assign]
    for n in range(1, 41):
        bus.process_external_task("SeqLanes", {"key": f"e{n % 8}", "n": n})
    dispatcher = quiet(bus, workers=2)
    dispatcher.start()
    try:
        dispatcher.trigger("SeqLanes")
        wait_for(lambda: started.count("SeqLanes") == 2)
        bus.process_external_task("Seq", {"key": "c", "n": 1})
        dispatcher.trigger("Seq")
        wait_for(lambda: bus.get_object("seq.counter", "c") is not None, timeout=10)
    finally:
        release.set()
        dispatcher.stop(timeout=20)
        bus.close()


def stopped_at_an_error_task(bus: IntegrationBus) -> int:
    """Seq's queue stopped at an Error task with a task behind it; the Error task's id."""
    from syncbus import ProcessType

    stuck = bus.process_external_task("Seq", {"key": "s", "n": 1}, process_type=ProcessType.ERROR)
    bus.process_external_task("Seq", {"key": "s", "n": 2})
    assert bus.process_tasks("Seq")["Seq"].stopped  # stopped at the Error task
    return int(stuck)  # type: ignore[arg-type]


def test_a_task_synchronized_by_hand_sends_its_queue_on(db_url: str) -> None:
    """In the serving process (the admin's Synchronize, on SQLite too): the task applied by
    hand may have stopped its queue; the tasks behind it run now, not at the next schedule."""
    bus = make_bus(db_url)
    dispatcher = quiet(bus)
    try:
        stuck = stopped_at_an_error_task(bus)
        dispatcher.start()
        assert bus.synchronize_task(stuck)
        wait_for(lambda: bus.queue_size("Seq") == 0, timeout=10)
        assert bus.get_object("seq.counter", "s")["n"] == 2  # type: ignore[index]
    finally:
        dispatcher.stop()
        bus.close()


@pytest.mark.parametrize("fix", ["delete", "delete several", "replace"])
def test_a_task_deleted_or_replaced_by_hand_sends_its_queue_on(db_url: str, fix: str) -> None:
    """In the serving process, on SQLite too (a new user's trial: after deleting the task that
    blocked a queue, the tasks behind it waited ~55 s for the scheduled run, where the 429
    said deleting it unblocks the queue): deleting the blocking task, or giving it a new
    object, sends the queue on now. PostgreSQL's workers elsewhere are woken by NOTIFY."""
    bus = make_bus(db_url)
    dispatcher = quiet(bus)
    heard: list[tuple[str, object]] = []

    class Heard:
        def tasks_deleted(self, name: str, ids: list[int]) -> None:
            heard.append(("deleted", (name, ids)))

        def task_replaced(self, name: str, task_id: int) -> None:
            heard.append(("replaced", (name, task_id)))

    bus.hooks.subscribe(Heard())
    try:
        stuck = stopped_at_an_error_task(bus)
        dispatcher.start()
        if fix == "delete":
            bus.delete_task(stuck)
            assert heard == [("deleted", ("Seq", [stuck]))]
        elif fix == "delete several":
            assert bus.delete_tasks([stuck, 10**9]) == (1, set())
            assert heard == [("deleted", ("Seq", [stuck]))]
        else:
            bus.replace_task_object(stuck, {"key": "s", "n": 0})  # Default again: it runs
            assert heard == [("replaced", ("Seq", stuck))]
        wait_for(lambda: bus.queue_size("Seq") == 0, timeout=10)  # not at the next schedule
        assert bus.get_object("seq.counter", "s")["n"] == 2  # type: ignore[index]
    finally:
        dispatcher.stop()
        bus.close()
