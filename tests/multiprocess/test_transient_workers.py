"""A `syncbus worker` whose database connections are terminated by the server, again and
again, during a 20,000-task drain: nothing failed, nothing doubled, no error entries
(CONTRACT §9: transient errors are retried by the bus)."""

from __future__ import annotations

from collections import defaultdict

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus
from syncbus.intake import TaskRequest
from tests.helpers import wait_for
from tests.workers import Workers, assert_exactly_once_in_order, audit_rows, install_audit
from tests.workers import wbus as wbus
from tests.workers import workers as workers

pytestmark = [pytest.mark.postgres, pytest.mark.multiprocess, pytest.mark.slow]


def test_terminated_connections_during_a_drain_lose_and_fail_nothing(
    wbus: IntegrationBus, workers: Workers
) -> None:
    install_audit(wbus.engine)
    total = 20_000
    expected: dict[str, list[int]] = defaultdict(list)
    for start in range(1, total + 1, 1000):
        chunk = []
        for n in range(start, start + 1000):
            chunk.append(TaskRequest({"key": f"k{n % 7}", "n": n}, task_type="UpdateObject"))
            expected[f"k{n % 7}"].append(n)
        wbus.log_tasks("Seq0", chunk)
    workers.start("--workers", "1", "--scheduler-interval", "0", "--batch-size", "100")
    for left in (total * 4 // 5, total * 3 // 5, total * 2 // 5, total // 5):
        wait_for(lambda left=left: wbus.queue_size() < left, timeout=120)  # type: ignore[misc]
        with wbus.engine.connect() as conn:  # every other session of this database ends
            ended = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert ended >= 1
    wait_for(lambda: wbus.queue_size() == 0, timeout=120)
    outputs = workers.stop_all()
    assert all(p.returncode == 0 for p in workers.procs), workers.report(outputs)
    assert_exactly_once_in_order(audit_rows(wbus.engine), dict(expected))
    assert "failed 0" in outputs[0] and "failed 1" not in outputs[0]
    with wbus.engine.connect() as conn:
        entries = conn.execute(sa.text("SELECT count(*) FROM syncbus_sync_log")).scalar_one()
    assert entries == 0, "a transient error was recorded as a task's failure"
