"""History under faults (CONTRACT §10, PostgreSQL): a record commits with its task's outcome or
not at all. Workers killed mid-batch (SIGKILL), stopped past their lease (SIGSTOP) or cut off
by the database (pg_terminate_backend) leave exactly one record per applied task, none for a
task still queued, and diffs that chain: each update's old value is the value the previous
task of its key left, which is only true if every diff was taken from the committed row."""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from typing import Any

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus
from tests.helpers import wait_for
from tests.seq import SeqLanesConnector
from tests.workers import Workers, install_audit
from tests.workers import wbus as wbus
from tests.workers import workers as workers

pytestmark = pytest.mark.multiprocess


def log_sequence(bus: IntegrationBus, connector: str, total: int, keys: int) -> None:
    for n in range(1, total + 1):
        bus.process_external_task(connector, {"key": f"k{n % keys}", "n": n})


def assert_one_record_per_applied_task_with_chained_diffs(
    bus: IntegrationBus, total: int, keys: int
) -> None:
    with bus.engine.connect() as conn:
        queued = conn.execute(sa.text("SELECT count(*) FROM syncbus_task")).scalar()
        rows = conn.execute(
            sa.text(
                "SELECT task_id, state, changes, code_name FROM syncbus_history ORDER BY task_id"
            )
        ).all()
    assert queued == 0
    assert [r.task_id for r in rows] == list(range(1, total + 1)), "a record lost or doubled"
    assert {r.state for r in rows} == {"applied"}
    last: dict[str, int | None] = defaultdict(lambda: None)
    for task_id, _, changes, key in rows:
        diff: dict[str, Any] = json.loads(changes)
        assert diff["n"] == [last[key], task_id], (task_id, key, diff)
        last[key] = task_id
    assert len(last) == keys


def test_sigkill_and_sigstop_leave_one_record_per_applied_task(
    wbus: IntegrationBus, workers: Workers
) -> None:
    install_audit(wbus.engine, sleep=0.002)
    total, keys = 900, 7
    log_sequence(wbus, "Seq0", total, keys)
    args = ("--scheduler-interval", "0", "--lease-seconds", "2")
    first = workers.start(*args)
    wait_for(lambda: wbus.queue_size() < total - 150, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = workers.start(*args)
    wait_for(lambda: wbus.queue_size() < total - 400, timeout=60)
    second.send_signal(signal.SIGSTOP)  # frozen inside a batch, past its lease
    try:
        workers.start(*args)
        wait_for(lambda: wbus.queue_size() == 0, timeout=90)
    finally:
        second.send_signal(signal.SIGCONT)
    time.sleep(0.5)  # the thawed worker finds its lease lost; nothing of it may commit
    workers.stop_all()
    assert_one_record_per_applied_task_with_chained_diffs(wbus, total, keys)


def test_terminated_connections_leave_one_record_per_applied_task(
    wbus: IntegrationBus, workers: Workers
) -> None:
    """Lease-free ENTITY runs (two workers share the connector) while the database ends
    their connections again and again."""
    install_audit(wbus.engine, sleep=0.001)
    wbus.register_connector(SeqLanesConnector)
    total, keys = 900, 25
    log_sequence(wbus, "SeqLanes", total, keys)
    for _ in range(2):
        workers.start("--scheduler-interval", "1", "--lease-seconds", "3", "--workers", "2")
    for left in (total * 3 // 4, total // 2, total // 4):
        wait_for(lambda left=left: wbus.queue_size() < left, timeout=120)  # type: ignore[misc]
        with wbus.engine.connect() as conn:  # every other session of this database ends
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
    wait_for(lambda: wbus.queue_size() == 0, timeout=120)
    workers.stop_all()
    assert_one_record_per_applied_task_with_chained_diffs(wbus, total, keys)
