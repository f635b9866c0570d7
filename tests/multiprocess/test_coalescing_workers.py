"""Coalescing under faults (PostgreSQL): a carrier and the tasks it absorbed leave the queue,
and are recorded, together or not at all. Workers killed mid-batch (SIGKILL), stopped past
their lease (SIGSTOP) or cut off by the database (pg_terminate_backend) leave every task
recorded once: each absorbed task as ``coalesced`` into the next applied task of its counter,
every write audited once and in order, and each counter holding its last task's value."""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from typing import Any

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus
from tests.helpers import wait_for
from tests.seq import SEQ_TYPE, SeqCoalesceConnector, SeqLanesCoalesceConnector
from tests.workers import (
    Workers,
    assert_exactly_once_in_order,
    audit_rows,
    end_sessions_while_draining,
    install_audit,
    kill_then_freeze,
    log_sequence,
)
from tests.workers import wbus as wbus
from tests.workers import workers as workers

pytestmark = pytest.mark.multiprocess


def assert_each_task_recorded_once_and_carried(
    bus: IntegrationBus, total: int, keys: int, audited: bool = True
) -> None:
    with bus.engine.connect() as conn:
        queued = conn.execute(sa.text("SELECT count(*) FROM syncbus_task")).scalar()
        rows = conn.execute(
            sa.text(
                "SELECT task_id, state, changes, code_name, into_task_id "
                "FROM syncbus_history ORDER BY task_id"
            )
        ).all()
        content = {
            name: n for name, n in conn.execute(sa.text("SELECT counter_name, n FROM seq_counter"))
        }
    assert queued == 0
    assert [r.task_id for r in rows] == list(range(1, total + 1)), "a record lost or doubled"
    states = {r.state for r in rows}
    assert states == {"applied", "coalesced"}, states
    # Walk each counter's tasks in order: the absorbed ones wait for the next applied one,
    # which carries them (into_task_id) and whose diff starts from the previous carrier's value.
    waiting: dict[str, list[int]] = defaultdict(list)
    carried: dict[str, int | None] = defaultdict(lambda: None)
    written: dict[str, list[int]] = defaultdict(list)
    for task_id, state, changes, key, into in rows:
        assert key == f"k{task_id % keys}", (task_id, key)
        if state == "coalesced":
            assert changes is None and into is not None and into > task_id, (task_id, into)
            waiting[key].append(task_id)
            continue
        assert into is None, (task_id, into)
        assert not waiting[key] or all(
            r.into_task_id == task_id for r in rows if r.task_id in waiting[key]
        ), f"task {task_id} applied, but the tasks before it were coalesced elsewhere"
        diff: dict[str, Any] = json.loads(changes)
        assert diff["n"] == [carried[key], task_id], (task_id, key, diff)
        carried[key], waiting[key] = task_id, []
        written[key].append(task_id)
    assert not any(waiting.values()), f"coalesced into a task never applied: {dict(waiting)}"
    last = {f"k{k}": max(n for n in range(1, total + 1) if n % keys == k) for k in range(keys)}
    assert content == last
    # Every write of the counters, once and in order: exactly the carriers (the trigger's
    # rows of a batch that did not commit are gone with it).
    if audited:
        assert_exactly_once_in_order(audit_rows(bus.engine), dict(written))
    assert sum(len(w) for w in written.values()) < total // 2, "hardly anything coalesced"


def test_sigkill_and_sigstop_keep_carriers_and_absorbed_tasks_together(
    wbus: IntegrationBus, workers: Workers
) -> None:
    install_audit(wbus.engine, sleep=0.01)
    wbus.register_connector(SeqCoalesceConnector)
    total, keys = 1_200, 7
    log_sequence(wbus, "SeqCoalesce", total, keys)
    args = ("--scheduler-interval", "0", "--lease-seconds", "2", "--batch-size", "50")
    kill_then_freeze(wbus, workers, args, killed=total - 150, frozen=total - 500)
    workers.stop_all()
    assert_each_task_recorded_once_and_carried(wbus, total, keys)


def test_terminated_connections_keep_carriers_and_absorbed_tasks_together(
    wbus: IntegrationBus, workers: Workers
) -> None:
    """Lease-free ENTITY runs (two workers share the connector) while the database ends
    their connections again and again."""
    install_audit(wbus.engine, sleep=0.005)
    wbus.register_connector(SeqLanesCoalesceConnector)
    total, keys = 1_200, 25
    log_sequence(wbus, "SeqLanesCoalesce", total, keys)
    for _ in range(2):
        workers.start(
            "--scheduler-interval", "1", "--lease-seconds", "3", "--workers", "2",
            "--batch-size", "100",
        )  # fmt: skip
    end_sessions_while_draining(wbus, total)
    workers.stop_all()
    assert_each_task_recorded_once_and_carried(wbus, total, keys)


def test_sigkill_on_sqlite_keeps_carriers_and_absorbed_tasks_together(sqlite_url: str) -> None:
    """SQLite: workers killed mid-drain, again and again (no trigger can slow a write down
    there, so the queue is long enough for each kill to land inside some batch)."""
    bus = IntegrationBus(sqlite_url)
    bus.register_object_type(SEQ_TYPE)
    bus.create_schema()
    bus.register_connector(SeqCoalesceConnector)
    total, keys = 6_000, 7
    log_sequence(bus, "SeqCoalesce", total, keys)
    workers = Workers(sqlite_url)
    args = ("--scheduler-interval", "0", "--lease-seconds", "1", "--batch-size", "40")
    try:
        for left in (total - 600, total // 2, total // 4):
            worker = workers.start(*args)
            wait_for(lambda left=left: bus.queue_size() < left, timeout=90)  # type: ignore[misc]
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        workers.start(*args)
        wait_for(lambda: bus.queue_size() == 0, timeout=120)
        workers.stop_all()
        assert_each_task_recorded_once_and_carried(bus, total, keys, audited=False)
    finally:
        workers.close()
        bus.close()
