"""`syncbus worker` processes on one PostgreSQL database: exactly once, in order, crash-safe,
graceful on SIGTERM."""

from __future__ import annotations

import signal
import time
from collections import defaultdict

import pytest

from syncbus import IntegrationBus
from tests.helpers import wait_for
from tests.workers import (
    CONNECTORS,
    Workers,
    assert_exactly_once_in_order,
    audit_rows,
    install_audit,
)
from tests.workers import wbus as wbus
from tests.workers import workers as workers

pytestmark = [pytest.mark.postgres, pytest.mark.multiprocess, pytest.mark.slow]


def test_three_workers_four_connectors_apply_every_task_once_in_order(
    wbus: IntegrationBus, workers: Workers
) -> None:
    install_audit(wbus.engine)
    for _ in range(3):
        workers.start("--workers", "4", "--scheduler-interval", "0", "--batch-size", "50")
    per_connector = 600
    expected: dict[str, list[int]] = defaultdict(list)
    start = time.monotonic()
    for n in range(1, per_connector + 1):  # interleaved, while the workers run
        for i, cls in enumerate(CONNECTORS):
            key = f"c{i}-k{n % 5}"
            wbus.process_external_task(cls.connector_name, {"key": key, "n": n})
            expected[key].append(n)
    wait_for(lambda: wbus.queue_size() == 0, timeout=120)
    elapsed = time.monotonic() - start
    outputs = workers.stop_all()
    assert all(p.returncode == 0 for p in workers.procs), workers.report(outputs)
    assert_exactly_once_in_order(audit_rows(wbus.engine), dict(expected))
    applied_by = applied_counts(outputs)
    assert sum(applied_by) == 4 * per_connector
    # Which process wins each connector's lease is a race (one fast process may hold all four
    # while tasks keep coming); that work is shared is proven below, where it cannot be a race.
    print(f"\n4x{per_connector} tasks through 3 workers in {elapsed:.2f}s; by worker {applied_by}")


def applied_counts(outputs: list[str]) -> list[int]:
    return [
        sum(
            int(line.split("applied ")[1].split(",")[0])
            for line in out.splitlines()
            if "applied " in line
        )
        for out in outputs
    ]


def test_connectors_spread_over_worker_processes(wbus: IntegrationBus, workers: Workers) -> None:
    """One-thread workers hold one connector's lease at a time; with four slow connectors
    queued, a second process finds a free connector long before the first could do them all."""
    install_audit(wbus.engine, sleep=0.003)
    per_connector = 300  # about a second of applying each
    expected: dict[str, list[int]] = defaultdict(list)
    for n in range(1, per_connector + 1):
        for i, cls in enumerate(CONNECTORS):
            wbus.process_external_task(cls.connector_name, {"key": f"c{i}", "n": n})
            expected[f"c{i}"].append(n)
    for _ in range(3):
        workers.start("--workers", "1", "--scheduler-interval", "0")
    wait_for(lambda: wbus.queue_size() == 0, timeout=120)
    outputs = workers.stop_all()
    assert all(p.returncode == 0 for p in workers.procs), workers.report(outputs)
    assert_exactly_once_in_order(audit_rows(wbus.engine), dict(expected))
    applied_by = applied_counts(outputs)
    assert sum(applied_by) == 4 * per_connector
    assert sum(1 for a in applied_by if a) >= 2, f"work was not shared: {applied_by}"
    print(f"\nby worker {applied_by}")


def test_sigkill_mid_batch_loses_nothing_and_doubles_nothing(
    wbus: IntegrationBus, workers: Workers
) -> None:
    install_audit(wbus.engine, sleep=0.003)
    total = 800
    expected: dict[str, list[int]] = defaultdict(list)
    for n in range(1, total + 1):
        wbus.process_external_task("Seq0", {"key": f"k{n % 3}", "n": n})
        expected[f"k{n % 3}"].append(n)
    first = workers.start("--scheduler-interval", "0", "--lease-seconds", "2")
    wait_for(lambda: wbus.queue_size() < total - 150, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    left = wbus.queue_size()
    assert 0 < left < total
    workers.start("--scheduler-interval", "0", "--lease-seconds", "2")
    wait_for(lambda: wbus.queue_size() == 0, timeout=60)
    assert_exactly_once_in_order(audit_rows(wbus.engine), dict(expected))


def test_sigterm_finishes_the_task_in_hand_and_releases_the_lease(
    wbus: IntegrationBus, workers: Workers
) -> None:
    install_audit(wbus.engine, sleep=0.003)
    total = 800
    for n in range(1, total + 1):
        wbus.process_external_task("Seq1", {"key": "k", "n": n})
    proc = workers.start("--scheduler-interval", "0", "--lease-seconds", "60")
    wait_for(lambda: wbus.queue_size() < total - 100, timeout=60)
    proc.send_signal(signal.SIGTERM)
    err = workers.finish(proc, timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in err
    left = wbus.queue_size()
    assert 0 < left < total, "SIGTERM should stop the run before the queue is drained"
    # The lease was released (not left to expire after 60 s): another run takes over at once.
    result = wbus.process_tasks("Seq1")["Seq1"]
    assert result.not_run_reason is None and result.applied == left
    rows = audit_rows(wbus.engine)
    assert [n for _, n in rows] == list(range(1, total + 1))
