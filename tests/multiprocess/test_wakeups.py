"""Wake-ups across processes (PostgreSQL NOTIFY): what unblocks a queue from another process
(a task synchronized or deleted by hand, processing switched back on) reaches an idle worker
at once, not at its next scheduled run (a new user's trial waited up to the scheduler
interval)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx
import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus, ProcessType
from syncbus.errors import TaskBusyError
from tests.helpers import wait_for
from tests.http_server import free_port
from tests.workers import Workers
from tests.workers import wbus as wbus
from tests.workers import workers as workers

pytestmark = pytest.mark.multiprocess
T = TypeVar("T")

IDLE = ("--scheduler-interval", "3600", "--lease-seconds", "5")  # no scheduled run in the test


def test_a_worker_goes_on_at_once_after_a_fix_and_after_a_switch(
    wbus: IntegrationBus, workers: Workers
) -> None:
    wbus.process_external_task("Seq0", {"key": "first", "n": 1})  # the first run applies it
    stuck = wbus.process_external_task("Seq0", {"key": "a", "n": 1}, process_type=ProcessType.ERROR)
    behind = [wbus.process_external_task("Seq0", {"key": "a", "n": n}) for n in (2, 3)]
    workers.start(*IDLE)
    # Its first run stops at the Error task (nothing else to do until someone acts).
    wait_for(lambda: _ran(wbus), timeout=30)
    assert [t.task_id for t in wbus.list_tasks("Seq0")] == [stuck, *behind]
    assert when_free(lambda: wbus.synchronize_task(stuck))
    wait_for(lambda: wbus.queue_size("Seq0") == 0, timeout=10)  # not an hour later
    assert wbus.get_object("seq.counter", "a")["n"] == 3  # type: ignore[index]

    wbus.settings.process_external = False
    for n in (4, 5):
        wbus.process_external_task("Seq0", {"key": "a", "n": n})
    assert wbus.queue_size("Seq0") == 2
    wbus.settings.process_external = True
    wait_for(lambda: wbus.queue_size("Seq0") == 0, timeout=10)
    assert wbus.get_object("seq.counter", "a")["n"] == 5  # type: ignore[index]
    outputs = workers.stop_all()
    assert all(p.returncode == 0 for p in workers.procs), workers.report(outputs)


def test_a_worker_goes_on_at_once_after_the_blocking_task_is_deleted(
    wbus: IntegrationBus, workers: Workers
) -> None:
    """A new user's trial: deleting the task that stopped a queue (as the 429 advises) left
    the tasks behind it for the next scheduled run."""
    wbus.process_external_task("Seq0", {"key": "first", "n": 1})  # the first run applies it
    stuck = wbus.process_external_task("Seq0", {"key": "d", "n": 1}, process_type=ProcessType.ERROR)
    wbus.process_external_task("Seq0", {"key": "d", "n": 2})
    workers.start(*IDLE)
    wait_for(lambda: _ran(wbus), timeout=30)
    assert wbus.queue_size("Seq0") == 2
    when_free(lambda: wbus.delete_task(stuck))
    wait_for(lambda: wbus.queue_size("Seq0") == 0, timeout=10)  # not an hour later
    assert wbus.get_object("seq.counter", "d")["n"] == 2  # type: ignore[index]
    outputs = workers.stop_all()
    assert all(p.returncode == 0 for p in workers.procs), workers.report(outputs)


def when_free(action: Callable[[], T]) -> T:
    """An operator's action on a task, tried again while a run holds the task (the worker may
    start another run of the stopped queue, from its first pass and its listener both: an
    admin action never waits on a running batch, it answers "busy")."""
    for _ in range(100):
        try:
            return action()
        except TaskBusyError:
            time.sleep(0.1)
    return action()


def _ran(bus: IntegrationBus) -> bool:
    """Seq0 had a run that did something, and it ended (a run that only stops at an Error
    task records nothing: the dashboard keeps the last run that did something)."""
    with bus.engine.connect() as conn:
        finished = conn.execute(
            sa.text(
                "SELECT l.last_run_finished_at FROM syncbus_lease l JOIN syncbus_connector c "
                "USING (connector_id) WHERE c.connector_name = 'Seq0'"
            )
        ).scalar()
    return finished is not None


def test_a_worker_serves_its_metrics_when_asked(wbus: IntegrationBus, workers: Workers) -> None:
    """A new user's trial found no way to see what dedicated workers applied."""
    port = free_port()
    for n in range(1, 8):
        wbus.process_external_task("Seq1", {"key": "m", "n": n})
    worker = workers.start(*IDLE, "--metrics-port", str(port))
    wait_for(lambda: wbus.queue_size("Seq1") == 0, timeout=30)

    def applied() -> float:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        lines = [x for x in text.splitlines() if x.startswith("syncbus_tasks_applied_total")]
        return sum(float(x.split()[-1]) for x in lines if 'connector="Seq1"' in x)

    wait_for(lambda: applied() == 7, timeout=10)
    taken = workers.start(*IDLE, "--metrics-port", str(port))  # the port is the first's
    out = workers.finish(taken, timeout=30)
    assert taken.returncode == 2 and f"cannot serve metrics on 127.0.0.1:{port}" in out
    assert worker.poll() is None
    outputs = workers.stop_all()
    assert worker.returncode == 0, workers.report(outputs)
