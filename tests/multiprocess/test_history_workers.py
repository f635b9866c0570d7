"""History under faults (CONTRACT §10, PostgreSQL): a record commits with its task's outcome or
not at all. Workers killed mid-batch (SIGKILL), stopped past their lease (SIGSTOP) or cut off
by the database (pg_terminate_backend) leave exactly one record per applied task, none for a
task still queued, and diffs that chain: each update's old value is the value the previous
task of its key left, which is only true if every diff was taken from the committed row."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus
from tests.seq import SeqLanesConnector
from tests.workers import (
    Workers,
    end_sessions_while_draining,
    install_audit,
    kill_then_freeze,
    log_sequence,
)
from tests.workers import wbus as wbus
from tests.workers import workers as workers

pytestmark = pytest.mark.multiprocess


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
    kill_then_freeze(wbus, workers, args, killed=total - 150, frozen=total - 400)
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
    end_sessions_while_draining(wbus, total)
    workers.stop_all()
    assert_one_record_per_applied_task_with_chained_diffs(wbus, total, keys)
