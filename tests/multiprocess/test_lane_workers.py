"""`syncbus worker` processes sharing one ENTITY connector on PostgreSQL, lane by lane: every
entity's updates applied exactly once and in order, through SIGKILL, SIGSTOP past the lease,
and connections terminated by the server."""

from __future__ import annotations

import signal
import time
from collections import defaultdict

import pytest

from syncbus import IntegrationBus
from syncbus.intake import TaskRequest
from tests.helpers import wait_for
from tests.seq import SeqLanesConnector
from tests.workers import (
    Workers,
    assert_exactly_once_in_order,
    audit_rows,
    end_sessions_while_draining,
    install_audit,
)
from tests.workers import wbus as wbus
from tests.workers import workers as workers

pytestmark = [pytest.mark.postgres, pytest.mark.multiprocess, pytest.mark.slow]

LANES = SeqLanesConnector.connector_name


def log_updates(bus: IntegrationBus, total: int, entities: int) -> dict[str, list[int]]:
    """``total`` updates round-robin over ``entities`` counters, each carrying its sequence
    number; logged in chunks (one transaction each)."""
    bus.register_connector(SeqLanesConnector)
    expected: dict[str, list[int]] = defaultdict(list)
    chunk: list[TaskRequest] = []
    for n in range(1, total + 1):
        key = f"e{n % entities}"
        chunk.append(TaskRequest({"key": key, "n": n}, task_type="UpdateObject"))
        expected[key].append(n)
        if len(chunk) == 1000:
            bus.log_tasks(LANES, chunk)
            chunk = []
    if chunk:
        bus.log_tasks(LANES, chunk)
    return expected


def start(workers: Workers, count: int) -> list:  # type: ignore[type-arg]
    return [
        workers.start(
            "--workers",
            "2",
            "--scheduler-interval",
            "0",
            "--lease-seconds",
            "2",
            "--batch-size",
            "50",
            "--grace",
            "10",
        )
        for _ in range(count)
    ]


def test_four_workers_one_entity_connector_survive_sigkill_and_sigstop(
    wbus: IntegrationBus, workers: Workers
) -> None:
    install_audit(wbus.engine, sleep=0.0002)
    total = 20_000
    expected = log_updates(wbus, total, entities=1_000)
    began = time.monotonic()
    killed, frozen, *_ = start(workers, 4)
    wait_for(lambda: wbus.queue_size() < total * 3 // 4, timeout=120)
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    wait_for(lambda: wbus.queue_size() < total // 2, timeout=120)
    frozen.send_signal(signal.SIGSTOP)  # past its 2 s lease: the server ends its session
    try:
        wait_for(lambda: wbus.queue_size() == 0, timeout=180)
    finally:
        frozen.send_signal(signal.SIGCONT)
    elapsed = time.monotonic() - began
    time.sleep(1.0)  # the frozen one wakes up to a dead connection, then goes on
    outputs = workers.stop_all()
    codes = [p.returncode for p in workers.procs]
    assert codes[0] == -signal.SIGKILL
    assert codes[1:] == [0, 0, 0], workers.report(outputs)
    assert_exactly_once_in_order(audit_rows(wbus.engine), dict(expected))
    print(f"\n{total} updates over 1,000 entities by 4 workers in {elapsed:.1f}s")


def test_entity_workers_survive_terminated_connections(
    wbus: IntegrationBus, workers: Workers
) -> None:
    install_audit(wbus.engine, sleep=0.0005)
    total = 4_000
    expected = log_updates(wbus, total, entities=200)
    start(workers, 2)
    end_sessions_while_draining(wbus, total)
    outputs = workers.stop_all()
    assert all(p.returncode == 0 for p in workers.procs), workers.report(outputs)
    assert_exactly_once_in_order(audit_rows(wbus.engine), dict(expected))


def test_no_waiting_task_misses_its_wake_up_when_runners_overlap(
    pg_url: str, workers: Workers
) -> None:
    """Memberships logged before their users, under two workers of four threads each: a
    runner may mark a membership waiting while another applies its user at the same moment
    (neither sees the other's uncommitted write). None may stay waiting for a user that
    exists: every membership is applied."""
    from syncbus import Ordering, TaskDataType
    from tests.helpers import DictConnector, membership, role, user

    class Shop(DictConnector):
        ordering = Ordering.ENTITY

    bus = IntegrationBus(pg_url)
    bus.create_schema()
    shop = Shop("Shop")
    bus.register_connector(shop)
    shop.knows("cms.role", "r", "member", site="main")
    bus.process_external_task("Shop", role("member"), site_name="main")
    for _ in range(2):
        workers.start("--workers", "4", "--scheduler-interval", "0", "--batch-size", "20")
    chunk: list[TaskRequest] = []
    total = 1500
    for n in range(total):
        shop.knows("cms.user", n, f"cust{n}")
        member = TaskRequest(
            membership(n, "r"), data_type=TaskDataType.SIMPLE_SNAPSHOT, site_name="main"
        )
        person = TaskRequest(user(f"cust{n}"), site_name="main")
        chunk += [member, person] if n % 5 == 0 else [person, member]
        if len(chunk) >= 100:
            bus.log_tasks("Shop", chunk)
            chunk = []
    if chunk:
        bus.log_tasks("Shop", chunk)
    try:
        wait_for(lambda: bus.queue_size("Shop") == 0, timeout=90)
    finally:
        stuck = [(t.task_id, t.waiting_for) for t in bus.list_tasks("Shop")]
        outputs = workers.stop_all()
        bus.close()
    assert stuck == [], stuck
    assert all(p.returncode == 0 for p in workers.procs), workers.report(outputs)
