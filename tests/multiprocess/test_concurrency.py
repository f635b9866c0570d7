"""Several processes on one PostgreSQL database: one run per connector at a time, crash safety,
and idempotent logging across processes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncbus import ProcessResult
from tests.helpers import ROOT, wait_for
from tests.seq import make_bus

pytestmark = pytest.mark.postgres


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.proc_worker", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_never_run_one_connector_at_once(pg_url: str, tmp_path: Path) -> None:
    bus = make_bus(pg_url)
    total = 1500
    keys = [f"c{i}" for i in range(5)]
    outs = [tmp_path / "w1.jsonl", tmp_path / "w2.jsonl"]
    workers = [_spawn("drain", pg_url, "8", str(out), "20") for out in outs]
    last: dict[str, int] = {}
    for n in range(1, total + 1):  # logged while both workers drain
        key = keys[n % len(keys)]
        bus.process_external_task("Seq", {"key": key, "n": n})
        last[key] = n
    for w in workers:
        _, err = w.communicate(timeout=60)
        assert w.returncode == 0, err
    runs = [
        (json.loads(line), i) for i, out in enumerate(outs) for line in out.read_text().splitlines()
    ]
    # Both processes won runs, and no two runs (each timed inside its lease) overlap in time.
    assert {i for _, i in runs} == {0, 1}
    intervals = sorted((start, end) for (start, end, _), _ in runs)
    for (_, end), (next_start, _) in itertools.pairwise(intervals):
        assert end <= next_start
    # Every task applied exactly once, in order: the counts add up, the last write won.
    final = bus.process_tasks("Seq")["Seq"].applied  # whatever arrived after the workers quit
    applied = sum(applied for (_, _, applied), _ in runs)
    assert applied + final == total
    assert bus.list_tasks("Seq") == []
    counters = {r["counter_name"]: r["n"] for r in bus.find_objects("seq.counter")}
    assert counters == last
    bus.close()


def _slow_audit_trigger(engine: sa.Engine) -> None:
    """Every write to seq_counter sleeps a little and leaves an audit row (to spot doubles)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE seq_audit (n integer NOT NULL)")
        conn.exec_driver_sql(
            """CREATE FUNCTION seq_slow() RETURNS trigger AS $$
            BEGIN PERFORM pg_sleep(0.01); INSERT INTO seq_audit VALUES (NEW.n); RETURN NEW; END
            $$ LANGUAGE plpgsql"""
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER seq_slow BEFORE INSERT OR UPDATE ON seq_counter "
            "FOR EACH ROW EXECUTE FUNCTION seq_slow()"
        )


@pytest.mark.slow
@pytest.mark.multiprocess
def test_killed_runner_loses_nothing_and_the_lease_expires(pg_url: str) -> None:
    bus = make_bus(pg_url, lease_seconds=2.0)
    _slow_audit_trigger(bus.engine)
    total = 300
    for n in range(1, total + 1):
        bus.process_external_task("Seq", {"key": f"c{n % 7}", "n": n})
    runner = _spawn("run", pg_url, "2.0")
    # Wait until the runner has committed some batches, then kill it mid-batch.
    wait_for(lambda: bus.queue_size("Seq") <= total - 60, timeout=30)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(timeout=10)
    left = bus.queue_size("Seq")
    assert 0 < left < total, "the runner should have been killed in the middle of the queue"
    # The dead runner's lease still holds the connector...
    assert bus.process_tasks("Seq")["Seq"].not_run_reason is not None
    # ...until it runs out; then another runner takes over and finishes the queue.
    runs: list[ProcessResult] = []

    def taken_over() -> bool:
        runs.append(bus.process_tasks("Seq")["Seq"])
        return runs[-1].not_run_reason is None

    wait_for(taken_over, interval=0.2)
    result = runs[-1]
    assert result.applied == left
    assert bus.queue_size("Seq") == 0
    with bus.engine.connect() as conn:
        audit = [n for (n,) in conn.execute(sa.text("SELECT n FROM seq_audit ORDER BY n"))]
    assert audit == list(range(1, total + 1)), "a task was lost or applied twice"
    counters = {r["counter_name"]: r["n"] for r in bus.find_objects("seq.counter")}
    assert counters == {
        f"c{k}": max(n for n in range(1, total + 1) if n % 7 == k) for k in range(7)
    }
    bus.close()


@pytest.mark.multiprocess
def test_idempotency_key_holds_across_processes(pg_url: str) -> None:
    bus = make_bus(pg_url)
    keys = [f"key-{i}" for i in range(40)]
    procs = [_spawn("log", pg_url, *keys) for _ in range(3)]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outputs.append(json.loads(out))
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(set(outputs[0])) == len(keys)
    assert bus.queue_size("Seq") == len(keys)
    bus.close()


def _waits_for_log_lock(engine: sa.Engine, connector_id: int) -> bool:
    """Whether a session waits for the logging lock of this connector (advisory, two keys)."""
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND classid::bigint = :a AND objid::bigint = :b AND objsubid = 2"
                ),
                {"a": 0x5342, "b": connector_id},
            ).scalar_one()
        )


def test_ids_commit_in_order_across_concurrent_loggers(pg_url: str) -> None:
    """A task whose id is lower but whose transaction commits later must not be overtaken:
    logging a connector's tasks is serialised until commit."""
    import threading

    bus = make_bus(pg_url)
    other = make_bus(pg_url)
    holder = sa.create_engine(bus.engine.url)
    with holder.connect() as conn:
        cid = conn.execute(
            sa.text("SELECT connector_id FROM syncbus_connector WHERE connector_name = 'Seq'")
        ).scalar_one()
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": 0x5342, "b": cid})
        done = threading.Event()
        threading.Thread(
            target=lambda: (other.process_external_task("Seq", {"key": "k", "n": 2}), done.set()),
            daemon=True,
        ).start()
        # Wait until the other logger either finished (the bug) or queued for the lock.
        wait_for(lambda: done.is_set() or _waits_for_log_lock(bus.engine, cid))
        assert not done.is_set(), "a logger got past another logger's open transaction"
        conn.rollback()
    assert done.wait(10)
    holder.dispose()
    other.close()
    bus.close()
