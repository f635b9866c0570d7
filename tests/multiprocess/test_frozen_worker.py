"""A frozen worker stalls no one (issue 10, item 2).

A worker stopped inside its batch transaction (SIGSTOP; a paused VM or a network partition
looks the same to the database) must not hold up other connectors, must be taken over once
its lease has run out, and must not make admin actions wait: they answer busy within 5 s.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus
from syncbus.errors import TaskBusyError
from tests.helpers import DictConnector, add_connector, log, pending, user, wait_for
from tests.workers import (
    CONNECTORS,
    Workers,
    assert_exactly_once_in_order,
    audit_rows,
    install_audit,
)
from tests.workers import wbus as wbus
from tests.workers import workers as workers  # SIGKILL ends a stopped worker too

T = TypeVar("T")


def within(seconds: float, call: Callable[[], T]) -> T | BaseException:
    """Run ``call`` in a thread; its result or exception. A call that has not returned after
    ``seconds`` fails the test instead of hanging it.

    No stopwatch: the holders below never let go while the call runs, and the only other bound
    a call could wait for is SQLite's 30 s busy timeout, well past ``seconds``. So a call that
    answers at all gave up by its own short bound (or at once), whatever the machine's load."""
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(call())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"the call was still waiting after {seconds} s"
    return box[0]


# -- a batch holds a task: admin actions answer busy, on both databases ---------------------


@pytest.fixture
def holder(bus: IntegrationBus) -> Iterator[Callable[[int], None]]:
    """Hold a task the way a running batch does: PostgreSQL, its row locked FOR UPDATE;
    SQLite, the database's write lock."""
    conns: list[sa.Connection] = []

    def hold(task_id: int) -> None:
        conn = bus.engine.connect()
        conns.append(conn)
        conn.begin()
        if bus.engine.dialect.name == "postgresql":
            conn.execute(
                sa.text("SELECT task_id FROM syncbus_task WHERE task_id = :id FOR UPDATE"),
                {"id": task_id},
            )
        else:
            conn.execute(
                sa.text("UPDATE syncbus_task SET title = title WHERE task_id = :id"),
                {"id": task_id},
            )

    yield hold
    for conn in conns:
        conn.rollback()
        conn.close()


@pytest.mark.parametrize("action", ["synchronize", "delete"])
def test_admin_action_on_a_task_in_a_running_batch_answers_busy_within_5s(
    bus: IntegrationBus, holder: Callable[[int], None], action: str
) -> None:
    add_connector(bus)
    task_id = log(bus, user("held"))
    holder(task_id)
    call = bus.synchronize_task if action == "synchronize" else bus.delete_task

    outcome = within(10, lambda: call(task_id))

    assert isinstance(outcome, TaskBusyError), outcome
    assert f"task {task_id}" in str(outcome)
    assert pending(bus) == [task_id]


# -- a real frozen worker, on PostgreSQL ---------------------------------------------------------


def _batch_in_hand(bus: IntegrationBus, connector: str) -> tuple[int, int] | None:
    with bus.engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT l.run_first_task_id, l.run_last_task_id FROM syncbus_lease l "
                "JOIN syncbus_connector c USING (connector_id) "
                "WHERE c.connector_name = :n AND l.owner IS NOT NULL"
            ),
            {"n": connector},
        ).first()
    return None if row is None or row[0] is None else (int(row[0]), int(row[1]))


def _open_transactions(bus: IntegrationBus) -> int:
    with bus.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        )


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_frozen_worker_stalls_no_one_and_is_taken_over(
    wbus: IntegrationBus, workers: Workers
) -> None:
    install_audit(wbus.engine, sleep=0.05)  # each write takes 50 ms: a batch of 20 takes a second
    frozen, other = CONNECTORS[0].connector_name, CONNECTORS[1].connector_name
    expected: dict[str, list[int]] = defaultdict(list)
    for n in range(1, 101):
        wbus.process_external_task(frozen, {"key": f"f{n % 2}", "n": n})
        expected[f"f{n % 2}"].append(n)
    first = workers.start(
        "--scheduler-interval", "0", "--lease-seconds", "10", "--batch-size", "20"
    )
    wait_for(lambda: wbus.queue_size(frozen) <= 80, timeout=30)  # a batch has committed
    time.sleep(0.3)  # ... and the next one is under way
    first.send_signal(signal.SIGSTOP)
    batch = _batch_in_hand(wbus, frozen)
    assert batch is not None and _open_transactions(wbus) >= 1, "not frozen inside a batch"

    # Admin actions on a task of the frozen batch answer busy at once; they never wait.
    for call in (wbus.delete_task, wbus.synchronize_task):
        outcome = within(10, lambda call=call: call(batch[0]))  # type: ignore[misc]
        assert isinstance(outcome, TaskBusyError), outcome

    # Another connector flows through a second worker while the first is frozen.
    second = workers.start("--scheduler-interval", "1", "--lease-seconds", "10", "--grace", "15")
    for n in range(1, 21):
        wbus.process_external_task(other, {"key": "o", "n": n})
        expected["o"].append(n)
    wait_for(lambda: wbus.queue_size(other) == 0, timeout=60)
    # No stopwatch: the frozen worker still holds its batch, so the other connector flowed
    # while it was frozen, not after a takeover.
    assert _batch_in_hand(wbus, frozen) == batch

    # Once the frozen worker's lease has run out, its connector is taken over.
    wait_for(lambda: wbus.queue_size(frozen) == 0, timeout=60)

    # SIGTERM stops the healthy worker within its grace period: exit status 0 says its runs
    # ended inside the 15 s (past it, the worker exits with 1), and it is gone soon after.
    second.send_signal(signal.SIGTERM)
    err = workers.finish(second, timeout=25)
    assert second.returncode == 0, err

    # The frozen worker wakes up to a dead transaction: nothing doubled, and it stops too.
    first.send_signal(signal.SIGCONT)
    time.sleep(1.0)
    first.send_signal(signal.SIGTERM)
    err = workers.finish(first, timeout=20)
    assert first.returncode == 0, err
    assert_exactly_once_in_order(audit_rows(wbus.engine), dict(expected))


class _SlowConnector(DictConnector):
    def prepare_internal_object(self, obj: Any, *args: Any) -> Any:
        time.sleep(1.5)
        return super().prepare_internal_object(obj, *args)


def test_a_slow_connector_is_not_cut_off_by_the_idle_in_transaction_timeout(
    db_url: str,
) -> None:
    """The server ends sessions idle inside a transaction for the lease length (1 s here);
    the connector's code runs outside any transaction, so taking longer is fine."""
    bus = IntegrationBus(db_url, lease_seconds=1.0)
    try:
        bus.create_schema()
        bus.register_connector(_SlowConnector())
        task_id = bus.process_external_task("TestConnector", user("slow"), site_name="main")
        assert task_id is not None and pending(bus) == [task_id]
    finally:
        bus.close()


@pytest.mark.parametrize("command", ["sync", "delete"])
def test_cli_action_on_a_task_in_a_running_batch_answers_busy_within_5s(
    db_url: str, bus: IntegrationBus, holder: Callable[[int], None], command: str
) -> None:
    """The command line too: its start-up (schema check) does not wait for the write lock,
    and the action itself gives up within seconds."""
    from typer.testing import CliRunner

    from syncbus.cli import app

    add_connector(bus)
    task_id = log(bus, user("held"))
    holder(task_id)

    outcome = within(
        20, lambda: CliRunner().invoke(app, ["--db", db_url, "tasks", command, str(task_id)])
    )

    assert not isinstance(outcome, BaseException), outcome
    assert outcome.exit_code == 2, outcome.output
    assert "being applied" in outcome.output
    assert pending(bus) == [task_id]
