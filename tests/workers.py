"""What the multi-process worker tests share: the Seq connectors, a PostgreSQL bus for them, a
trigger that audits every write, and a handle on `syncbus worker` subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus

from .helpers import wait_for
from .seq import SEQ_TYPE, SeqConnector

ROOT = Path(__file__).resolve().parent.parent
CONNECTORS = [type(f"Seq{i}", (SeqConnector,), {"connector_name": f"Seq{i}"}) for i in range(4)]


def install_audit(engine: sa.Engine, sleep: float = 0.0) -> None:
    """Every write to seq_counter leaves an audit row (to spot lost, doubled or reordered
    tasks) and, with ``sleep``, takes that long (to kill a worker mid-batch)."""
    pause = f"PERFORM pg_sleep({sleep});" if sleep else ""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE seq_audit (id bigserial PRIMARY KEY, name text NOT NULL, n int NOT NULL)"
        )
        conn.exec_driver_sql(
            f"""CREATE FUNCTION seq_audit() RETURNS trigger AS $$
            BEGIN {pause} INSERT INTO seq_audit (name, n) VALUES (NEW.counter_name, NEW.n);
            RETURN NEW; END $$ LANGUAGE plpgsql"""
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER seq_audit BEFORE INSERT OR UPDATE ON seq_counter "
            "FOR EACH ROW EXECUTE FUNCTION seq_audit()"
        )


@pytest.fixture
def wbus(pg_url: str) -> Iterator[IntegrationBus]:
    bus = IntegrationBus(pg_url)
    bus.register_object_type(SEQ_TYPE)
    bus.create_schema()
    for cls in CONNECTORS:
        bus.register_connector(cls)
    yield bus
    bus.close()


class Workers:
    """`syncbus worker` subprocesses. What each prints goes to a file of its own, not a pipe:
    nothing reads a pipe while a test runs, and a worker that filled one (tracebacks on a slow,
    busy machine) would block on its next write: a stall the test would blame on the bus."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[IO[str]] = []

    def start(self, *extra: str) -> subprocess.Popen[str]:
        log = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed by close())
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncbus.cli", "worker", "--db", self.url, *extra],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def output(self, i: int) -> str:
        """What worker ``i`` printed; call it once the worker has exited (the file's offset
        is shared with the worker, and this moves it)."""
        log = self.logs[i]
        log.seek(0)
        return log.read()

    def finish(self, proc: subprocess.Popen[str], timeout: float) -> str:
        """Wait for ``proc`` to exit; what it printed."""
        proc.wait(timeout=timeout)
        return self.output(self.procs.index(proc))

    def stop_all(self) -> list[str]:
        """SIGTERM every worker still running and return what each printed, in order."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for i, proc in enumerate(self.procs):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGUSR1)  # its threads' stacks, into its output
                time.sleep(1)
                proc.kill()
                proc.wait()
                raise AssertionError(
                    f"worker {i} did not stop within 60 s of SIGTERM; its output and "
                    f"stacks:\n{self.output(i)}"
                ) from None
        return [self.output(i) for i in range(len(self.procs))]

    def close(self) -> None:
        """Kill what still runs; print each worker's output (pytest shows it when the test
        failed) and drop the files."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for i, proc in enumerate(self.procs):
            print(f"--- worker {i}: exit status {proc.returncode}\n{self.output(i)}")
        for log in self.logs:
            log.close()

    def report(self, outputs: list[str]) -> str:
        """Each worker's exit status and its whole stderr (for an assertion message)."""
        return "\n".join(
            f"--- worker {i}: exit status {proc.returncode}\n{out}"
            for i, (proc, out) in enumerate(zip(self.procs, outputs, strict=True))
        )


@pytest.fixture
def workers(pg_url: str) -> Iterator[Workers]:
    w = Workers(pg_url)
    yield w
    w.close()


def audit_rows(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT name, n FROM seq_audit ORDER BY id")))


def assert_exactly_once_in_order(rows: list[Any], expected: dict[str, list[int]]) -> None:
    seen: dict[str, list[int]] = defaultdict(list)
    for name, n in rows:
        seen[name].append(n)
    assert dict(seen) == expected, "a task was lost, applied twice or applied out of order"


def log_sequence(bus: IntegrationBus, connector: str, total: int, keys: int) -> None:
    """Tasks 1..total setting counter ``k{n % keys}`` to ``n`` (task n's id is n)."""
    for n in range(1, total + 1):
        bus.process_external_task(connector, {"key": f"k{n % keys}", "n": n})


def end_other_sessions(engine: sa.Engine) -> None:
    """End every other session of this database (the workers' connections)."""
    with engine.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )


def end_sessions_while_draining(bus: IntegrationBus, total: int) -> None:
    """At three quarters, half and a quarter of ``total`` left, end the workers' sessions;
    then wait until the queue is empty."""
    for left in (total * 3 // 4, total // 2, total // 4):
        wait_for(lambda left=left: bus.queue_size() < left, timeout=120)  # type: ignore[misc]
        end_other_sessions(bus.engine)
    wait_for(lambda: bus.queue_size() == 0, timeout=120)


def kill_then_freeze(
    bus: IntegrationBus, workers: Workers, args: tuple[str, ...], killed: int, frozen: int
) -> None:
    """A worker SIGKILLed once fewer than ``killed`` tasks are queued, the next one SIGSTOPped
    (frozen inside a batch, past its lease) below ``frozen``, a third drains the rest; then
    the frozen one thaws and finds its lease lost (nothing of it may commit)."""
    first = workers.start(*args)
    wait_for(lambda: bus.queue_size() < killed, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = workers.start(*args)
    wait_for(lambda: bus.queue_size() < frozen, timeout=60)
    second.send_signal(signal.SIGSTOP)
    try:
        workers.start(*args)
        wait_for(lambda: bus.queue_size() == 0, timeout=90)
    finally:
        second.send_signal(signal.SIGCONT)
    time.sleep(0.5)
