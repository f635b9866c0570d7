"""Peer job queues doing the same apply work: procrastinate (PostgreSQL), huey (SQLite) and
Celery on Redis (both; ``celerypeer.py``).

Each job carries one stored task payload (the same JSON the bus and the raw floor read) and
applies it with the raw floor's ``RawApplier`` (same lookups, same upserts) in one transaction
of its own, through an engine of the peer's own (``peer_engine``). The bench enqueues the jobs
one call each, then, after the same maintenance the bus's drains get (``before_work``: VACUUM
ANALYZE, or a WAL checkpoint; not timed), runs one worker until the queue is drained; both are
timed. A peer that is not installed, or whose broker is unreachable, is reported as such, never
given a number.
"""

from __future__ import annotations

import importlib
import importlib.util
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from syncbus.bench.environment import libpq_url
from syncbus.bench.rawapply import RawApplier
from syncbus.content.registry import TypeRegistry
from syncbus.store.db import make_engine

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
    note: str = ""


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def peer_engine(url: str) -> sa.Engine:
    """The engine a peer's jobs apply through. SQLite: the bus's own settings (WAL,
    ``synchronous=FULL``, ``BEGIN IMMEDIATE``, busy timeout), so a job's commit costs what the
    bus's does. PostgreSQL: a plain pool of its own, without the bus engine's
    ``pool_pre_ping`` (a round trip per checkout, so per job here) and without the bench's
    statement counter: nothing of the bus's in a peer's way."""
    if make_url(url).get_backend_name() == "sqlite":
        return make_engine(url)
    return sa.create_engine(url, pool_size=2, max_overflow=0)


def redis_unreachable(url: str, timeout: float = 0.5) -> str | None:
    """Why the Redis server at ``url`` cannot be used, or None when it answers PING."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        return f"Redis at {host}:{port} is not reachable ({exc.__class__.__name__}: {exc})"
    if not answer.startswith(b"+PONG"):
        reply = answer.decode(errors="replace").strip()
        return f"Redis at {host}:{port} did not answer PING ({reply!r})"
    return None


def _apply_job(engine: sa.Engine, applier: RawApplier) -> Callable[[str, str | None, str], None]:
    def apply(task_type: str, site_name: str | None, data: str) -> None:
        with engine.begin() as conn:
            applier.apply(conn, task_type, site_name, data)

    return apply


def run_procrastinate(
    url: str,
    registry: TypeRegistry,
    rows: Rows,
    enqueued: Progress,
    worked: Progress,
    before_work: Callable[[], None],
) -> PeerRun:
    """procrastinate 3 on the scratch PostgreSQL database: one worker, concurrency 1 (FIFO),
    jobs deleted when they succeed (as the bus deletes applied tasks).

    ``before_work`` (VACUUM ANALYZE) matters here: with autovacuum off, or before it comes
    round, the planner has no statistics for the freshly filled job table and plans the job
    fetch as a scan and sort of every waiting job, once per job: the drain turns quadratic."""
    procrastinate = importlib.import_module("procrastinate")  # optional: the bench extra
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=libpq_url(url)))
    engine = peer_engine(url)
    apply = _apply_job(engine, RawApplier(engine, registry))
    executed = 0

    @app.task(name="bench_apply", queue="bench")  # type: ignore[untyped-decorator]
    def bench_apply(task_type: str, site_name: str | None, data: str) -> None:
        nonlocal executed
        apply(task_type, site_name, data)
        executed += 1

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
    before_work()
    progress = _Ticker(lambda: executed, worked)
    start = time.perf_counter()
    with progress:
        app.run_worker(
            queues=["bench"],
            wait=False,  # stop once the queue is empty
            concurrency=1,
            install_signal_handlers=False,
            delete_jobs="successful",
            listen_notify=False,  # wait=False never waits for a notification
        )
    work_seconds = time.perf_counter() - start
    worked(executed)
    try:
        with engine.connect() as conn:
            left = conn.exec_driver_sql("SELECT count(*) FROM procrastinate_jobs").scalar_one()
    finally:
        engine.dispose()
    return PeerRun("procrastinate", n, enqueue_seconds, work_seconds, executed, int(left))


class _Ticker:
    """Reports a peer's progress from a thread of its own, twice a second, so the job itself
    does nothing for the progress bar."""

    def __init__(self, count: Callable[[], int], worked: Progress) -> None:
        self._count, self._worked = count, worked
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-progress", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._worked(self._count())

    def __enter__(self) -> _Ticker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run_huey(
    url: str,
    registry: TypeRegistry,
    rows: Rows,
    enqueued: Progress,
    worked: Progress,
    before_work: Callable[[], None],
) -> PeerRun:
    """huey's SqliteHuey in the same SQLite file (WAL, synchronous=FULL like the bus), strict
    FIFO, one worker thread of a real huey consumer."""
    SqliteHuey = importlib.import_module("huey").SqliteHuey  # optional: the bench extra
    sqlite_path = make_url(url).database
    assert sqlite_path is not None
    huey = SqliteHuey(
        name="bench",
        filename=sqlite_path,
        fsync=True,
        journal_mode="wal",
        strict_fifo=True,
        results=False,
        timeout=30,
    )
    engine = peer_engine(url)
    apply = _apply_job(engine, RawApplier(engine, registry))
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
    before_work()
    try:
        with _Ticker(lambda: int(state["executed"]), worked):
            work_seconds = _drain_huey(huey, finished, n)
        worked(state["executed"])
        if state["error"] is not None:
            raise state["error"]
        left = int(huey.pending_count())
    finally:
        huey.storage.close()
        engine.dispose()
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
