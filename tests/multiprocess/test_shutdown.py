"""Stopping on SIGTERM (issue 10, items 2 and 20): an idle `serve` exits in under a second; a
worker whose run cannot finish exits when its grace
period is over, losing nothing.

The worker's exit needs no stopwatch: the write it would otherwise wait for takes an hour, so
a generous timeout tells the grace period from the write on however busy a machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from syncbus import IntegrationBus
from tests.helpers import ROOT, healthz, wait_for
from tests.http_server import spawn_listening
from tests.workers import Workers, install_audit, log_sequence
from tests.workers import wbus as wbus


def _serve_and_stop(db_url: str) -> float:
    """Start `syncbus serve`, wait until it answers, SIGTERM it: seconds until it exited."""
    serve = [sys.executable, "-m", "syncbus.cli", "serve", "--db", db_url]
    proc, url = spawn_listening(
        lambda port: [*serve, "--port", str(port)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        env={**os.environ, "SYNCBUS_API_TOKEN": "shutdown-test"},
    )
    try:
        wait_for(lambda: healthz(url, proc) == 200, timeout=30)
        time.sleep(0.5)  # idle
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        elapsed = time.monotonic() - start
        assert proc.returncode == 0
        return elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.multiprocess
def test_idle_serve_exits_within_a_second_of_sigterm(db_url: str) -> None:
    """Kept on a stopwatch: "under a second" is the requirement itself (what it guards
    against, such as a full garbage collection at exit, takes a second or two, not hours)."""
    IntegrationBus(db_url).create_schema()
    # Best of two: one slow start of the machine is not the service's doing.
    best = min(_serve_and_stop(db_url) for _ in range(2))
    assert best < 1.0, f"serve took {best:.2f} s to exit"


@pytest.mark.postgres
@pytest.mark.multiprocess
def test_worker_exits_after_its_grace_period_and_loses_nothing(
    wbus: IntegrationBus,
    pg_url: str,
) -> None:
    install_audit(wbus.engine, sleep=3600)  # the first write of the batch takes an hour
    task_id = wbus.process_external_task("Seq0", {"key": "k", "n": 1})
    workers = Workers(pg_url)
    proc = workers.start("--scheduler-interval", "0", "--grace", "2")
    try:
        wait_for(lambda: _sleeping(wbus), 30)  # inside the batch's first write
        proc.send_signal(signal.SIGTERM)
        err = workers.finish(proc, timeout=60)  # the grace is 2 s; the write, an hour
    finally:
        workers.close()
    assert proc.returncode == 1, err
    assert "grace period" in err
    assert wbus.get_task(task_id or 0) is not None  # rolled back: still queued


def _sleeping(bus: IntegrationBus) -> bool:
    with bus.engine.connect() as conn:
        return bool(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                "AND datname = current_database()"
            ).scalar_one()
        )


def test_a_worker_prints_its_threads_stacks_on_sigusr1(sqlite_url: str) -> None:
    """Where a stuck worker is stuck: `kill -USR1 PID` prints every thread's stack to stderr,
    and the worker goes on (a SIGTERM then stops it as usual)."""
    command = [sys.executable, "-m", "syncbus.cli", "worker", "--db", sqlite_url]
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        assert "worker started" in proc.stderr.readline()
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1)
        assert proc.poll() is None  # still working
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Current thread" in err or "Thread 0x" in err, err
        assert "dispatcher" in err.lower() or "threading.py" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.postgres
@pytest.mark.multiprocess
def test_a_busy_worker_survives_repeated_sigusr1(wbus: IntegrationBus, pg_url: str) -> None:
    """SIGUSR1 is for looking at a worker, never for stopping it: sent again and again while
    the worker drains a queue (its runs start and end threads all the while), every signal
    prints the stacks and the worker goes on and finishes the queue."""
    total = 3_000
    log_sequence(wbus, "Seq0", total, keys=50)
    workers = Workers(pg_url)
    proc = workers.start("--scheduler-interval", "0")
    try:
        wait_for(lambda: wbus.queue_size() < total, 60)  # draining
        for _ in range(40):
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.05)
            assert proc.poll() is None, workers.output(0)
        wait_for(lambda: wbus.queue_size() == 0 or proc.poll() is not None, 120)
        assert proc.poll() is None, workers.output(0)
        assert wbus.queue_size() == 0
        proc.send_signal(signal.SIGTERM)
        err = workers.finish(proc, timeout=60)
    finally:
        workers.close()
    assert proc.returncode == 0, err
    # Signals sent while one is pending merge into one: most, not all, print.
    assert err.count("--- stacks of") >= 10, err
    assert "dispatcher.py" in err, err
