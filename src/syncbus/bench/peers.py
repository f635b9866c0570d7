"""Peer job queues doing the same apply work: procrastinate (PostgreSQL) and huey (SQLite).

Each job carries one stored task payload (the same JSON the bus and the raw floor read) and
applies it with the raw floor's ``RawApplier`` (same lookups, same upserts) in one transaction
of its own, on the bus's engine. The bench enqueues the jobs one call (one commit) each, then
runs one worker until the queue is drained; both are timed. A peer that is not installed is
reported as such, never given a number.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from syncbus.bench.environment import libpq_url
from syncbus.bench.rawapply import RawApplier

Progress = Callable[[int], None]
Rows = Callable[[], Iterator[list[Any]]]


@dataclass
class PeerRun:
    name: str
    tasks: int
    enqueue_seconds: float
    work_seconds: float
    executed: int
    queued_after: int


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _apply_job(engine: sa.Engine, applier: RawApplier) -> Callable[[str, str | None, str], None]:
    def apply(task_type: str, site_name: str | None, data: str) -> None:
        with engine.begin() as conn:
            applier.apply(conn, task_type, site_name, data)

    return apply


def run_procrastinate(
    url: str,
    engine: sa.Engine,
    applier: RawApplier,
    rows: Rows,
    enqueued: Progress,
    worked: Progress,
) -> PeerRun:
    """procrastinate 3 on the scratch PostgreSQL database: one worker, concurrency 1 (FIFO),
    jobs deleted when they succeed (as the bus deletes applied tasks)."""
    procrastinate = importlib.import_module("procrastinate")  # optional: the bench extra
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=libpq_url(url)))
    apply = _apply_job(engine, applier)
    executed = 0

    @app.task(name="bench_apply", queue="bench")  # type: ignore[untyped-decorator]
    def bench_apply(task_type: str, site_name: str | None, data: str) -> None:
        nonlocal executed
        apply(task_type, site_name, data)
        executed += 1
        if executed % 200 == 0:
            worked(executed)

    n = 0
    enqueue_seconds = 0.0
    with app.open():
        app.schema_manager.apply_schema()
        for chunk in rows():
            start = time.perf_counter()
            for row in chunk:
                bench_apply.defer(task_type=row.task_type, site_name=row.site_name, data=row.data)
            enqueue_seconds += time.perf_counter() - start
            n += len(chunk)
            enqueued(n)
    start = time.perf_counter()
    app.run_worker(
        queues=["bench"],
        wait=False,
        concurrency=1,
        install_signal_handlers=False,
        delete_jobs="successful",
    )
    work_seconds = time.perf_counter() - start
    worked(executed)
    with engine.connect() as conn:
        left = conn.exec_driver_sql("SELECT count(*) FROM procrastinate_jobs").scalar_one()
    return PeerRun("procrastinate", n, enqueue_seconds, work_seconds, executed, int(left))


def run_huey(
    sqlite_path: str,
    engine: sa.Engine,
    applier: RawApplier,
    rows: Rows,
    enqueued: Progress,
    worked: Progress,
) -> PeerRun:
    """huey's SqliteHuey in the same SQLite file (WAL, synchronous=FULL like the bus), strict
    FIFO, one worker thread of a real huey consumer."""
    SqliteHuey = importlib.import_module("huey").SqliteHuey  # optional: the bench extra

    huey = SqliteHuey(
        name="bench",
        filename=sqlite_path,
        fsync=True,
        journal_mode="wal",
        strict_fifo=True,
        results=False,
        timeout=30,
    )
    apply = _apply_job(engine, applier)
    state: dict[str, Any] = {"executed": 0, "error": None, "expected": None}
    finished = threading.Event()

    @huey.task(name="bench_apply")  # type: ignore[untyped-decorator]
    def bench_apply(task_type: str, site_name: str | None, data: str) -> None:
        try:
            apply(task_type, site_name, data)
        except Exception as exc:  # huey would only log it: stop the run instead
            state["error"] = exc
            finished.set()
            raise
        state["executed"] += 1
        if state["executed"] % 200 == 0:
            worked(state["executed"])
        if state["executed"] == state["expected"]:
            finished.set()

    n, enqueue_seconds = 0, 0.0
    for chunk in rows():
        start = time.perf_counter()
        for row in chunk:
            bench_apply(row.task_type, row.site_name, row.data)
        enqueue_seconds += time.perf_counter() - start
        n += len(chunk)
        enqueued(n)
    state["expected"] = n
    work_seconds = _drain_huey(huey, finished, n)
    worked(state["executed"])
    if state["error"] is not None:
        raise state["error"]
    left = int(huey.pending_count())
    huey.storage.close()
    return PeerRun("huey", n, enqueue_seconds, work_seconds, state["executed"], left)


def _drain_huey(huey: Any, finished: threading.Event, n: int) -> float:
    """Start a consumer (one worker thread), wait until every job ran, stop it."""
    if n == 0:
        return 0.0
    consumer = huey.create_consumer(
        workers=1,
        worker_type="thread",
        periodic=False,
        initial_delay=0.001,
        max_delay=0.01,
        check_worker_health=False,
    )
    # The bench is not a huey process: leave the process's signal handlers alone.
    consumer._set_signal_handlers = lambda: None
    start = time.perf_counter()
    try:
        consumer.start()
        finished.wait()
        seconds = time.perf_counter() - start
    finally:
        consumer.stop(graceful=True)
    return seconds
