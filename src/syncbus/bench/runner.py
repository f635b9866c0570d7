"""One bench run on one backend: the phases in order, each timed alone and gated.

1. setup (not timed): schema, connector, the referenced users/roles/forums/folders;
2. ``log-api``: every task through ``process_external_task``, one call each;
3. ``raw-insert-single`` / ``raw-insert-many``: the same rows into tables of the same shape;
4. ``process``: ``bus.process_tasks()`` drains the queue (history on, the default); content and
   history gates; then ``process-history-off``: the content reset, the very same queue put back,
   ``history_retention_days = 0``, drained again; content and history gates; history on again;
5. ``raw-sql-floor``: the hand-written loop drains a copy of the queue into the same (reset)
   content tables, task by task; counts and content gates;
   ``raw-setwise-floor``: the same copy of the queue again, drained set-wise (``setwise.py``:
   per batch one lookup per referenced type, grouped writes, one delete, one commit) into the
   content tables reset again; counts and content gates. ``process`` over it is the headline;
6. peers (when installed): procrastinate on PostgreSQL, huey on SQLite, Celery on Redis on both
   (when the broker answers); content gate;
7. ``end-to-end``: logging at a fixed rate while processing; latency; content gate;
8. ``log-http-single`` / ``log-http-concurrent`` / ``log-http-batch``: the first ``http_tasks``
   tasks POSTed to the real service app (``http.py``): one per request from one client; one
   per request from ``HTTP_CLIENTS`` concurrent clients in a process of their own (the server
   commits the requests that arrive together in one transaction: group commit); then in
   batches of the batch size.

The HTTP phases run last, on the queue every earlier phase left empty (each of those gates
``queued == 0``), under the bench connector, so they cannot disturb what the process path and
its content gate expect. Their tasks are never processed: after each HTTP phase they are
deleted with plain SQL (not timed), so the next starts from an empty queue as well.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from rich.progress import Progress, TaskID

from syncbus.bench import floors, http
from syncbus.bench.e2e import run_e2e
from syncbus.bench.environment import Scratch, durability, machine, maintenance, reset_content
from syncbus.bench.gate import BenchGateError, Gates
from syncbus.bench.peers import PeerRun, installed, redis_unreachable, run_huey, run_procrastinate
from syncbus.bench.prepare import BenchHooks, chunks, peak_rss_mb, prepare_bus
from syncbus.bench.rawapply import RawApplier
from syncbus.bench.reference import ReferenceModel
from syncbus.bench.report import BenchReport, Row, percentile
from syncbus.bench.setwise import SetwiseApplier, setwise_process
from syncbus.bench.workload import (
    CONNECTOR_NAME,
    WORKLOAD_VERSION,
    BenchTask,
    Profile,
    Workload,
)
from syncbus.bus import IntegrationBus
from syncbus.model import ProcessResult
from syncbus.store.tables import task_table

E2E_LOAD = 1 / 3
HTTP_PATHS = ("log-http-single", "log-http-concurrent", "log-http-batch")
HTTP_CLIENTS = 32  # concurrent clients of log-http-concurrent
HISTORY_OFF = "process-history-off"
HISTORY_DAYS = 7  # what history_retention_days is set back to after the history-off path
RAW_FLOOR = "raw-sql-floor"
SETWISE_FLOOR = "raw-setwise-floor"
# The Celery peer's broker (``SYNCBUS_BENCH_REDIS_URL`` to use another server or database).
REDIS_URL = "redis://127.0.0.1:6379/0"
PEERS = ("procrastinate", "huey", "celery")


class BenchRun:
    """The phases of one run against one scratch database."""

    def __init__(
        self,
        profile: Profile,
        scratch: Scratch,
        progress: Progress,
        batch_size: int,
        hooks: BenchHooks,
    ) -> None:
        self.profile = profile
        self.scratch = scratch
        self.progress = progress
        self.hooks = hooks
        self.workload = Workload(profile)
        self.bus = IntegrationBus(scratch.url, batch_size=batch_size)
        self.engine: sa.Engine = self.bus.engine
        self.gates = Gates(self.bus.registry, hooks.before_gate)
        self.backend = scratch.backend
        self.statements = 0  # SQL statements sent through the bus's engine (bus and floors)
        sa.event.listen(self.engine, "before_cursor_execute", self._count_statement)
        self.report = BenchReport(
            profile=profile.name,
            backend=self.backend,
            workload_version=WORKLOAD_VERSION,
            batch_size=batch_size,
            database=scratch.name,
            machine={},
            durability={},
            gates=self.gates.passed,
        )

    def run(self) -> BenchReport:
        try:
            prepare_bus(self.bus, self.workload, self.gates)
            floors.create_tables(self.engine)
            self.report.machine = machine(self.engine)
            self.report.durability = durability(self.engine)
            expected = ReferenceModel.of(self.workload)
            self.log_path()
            self.insert_floors()
            self.process_paths(expected)
            self.raw_floor(expected)
            self.setwise_floor(expected)
            self.peers()
            self.end_to_end()
            self.http_paths()
            self.headline()
        finally:
            self.bus.close()
        return self.report

    # -- helpers ------------------------------------------------------------------------------
    def _count_statement(self, *_: Any) -> None:
        self.statements += 1

    def _bar(self, label: str, total: int) -> TaskID:
        return self.progress.add_task(f"[{self.backend}] {label}", total=total)

    def _row(
        self,
        path: str,
        tasks: int,
        seconds: float,
        kind: str = "syncbus",
        statements: int | None = None,
    ) -> None:
        row = Row(self.backend, path, tasks, seconds, peak_rss_mb(), kind=kind)
        row.statements = statements
        self.report.rows.append(row)

    def _reset(self) -> None:
        reset_content(self.engine, self.bus.registry)

    # -- paths ----------------------------------------------------------------------------------
    def log_path(self) -> None:
        n, bus = self.profile.tasks, self.bus
        bar = self._bar("log: process_external_task", n)
        seconds, last, count = 0.0, 0, 0
        s0 = self.statements
        with self.hooks.wrap("log-api"):
            for chunk in chunks(self.workload.tasks(), 1_000):  # generated outside the timer
                start = time.perf_counter()
                for t in chunk:
                    task_id = bus.process_external_task(
                        CONNECTOR_NAME,
                        t.obj,
                        task_type=t.task_type,
                        data_type=t.data_type,
                        site_name=t.site_name,
                    )
                    if task_id is None or task_id <= last:
                        detail = f"task {t.seq} got id {task_id} after id {last}"
                        raise BenchGateError("log", "log-api", detail)
                    last = task_id
                seconds += time.perf_counter() - start
                count += len(chunk)
                self.progress.update(bar, completed=count)
        statements = self.statements - s0
        queued = bus.queue_size()
        self.gates.require(
            count == n and queued == n, "log", "log-api", f"logged={count} queued={queued} of {n}"
        )
        self._row("log-api", n, seconds, statements=statements)

    def insert_floors(self) -> None:
        n = self.profile.tasks
        kept = floors.copy_payloads(self.engine)
        self.gates.require(kept == n, "copy", "payloads", f"{kept} payloads kept of {n}")
        bar = self._bar("raw insert floor: 1 row per commit", n)
        s0 = self.statements
        seconds, rows = floors.insert_single(self.engine, self._advance(bar))
        statements = self.statements - s0
        self.gates.require(rows == n, "counts", "raw-insert-single", f"{rows} rows of {n}")
        self._row("raw-insert-single", n, seconds, "baseline", statements)
        bar = self._bar("raw insert floor: executemany", n)
        s0 = self.statements
        seconds, rows = floors.insert_many(self.engine, self.report.batch_size, self._advance(bar))
        self.gates.require(rows == n, "counts", "raw-insert-many", f"{rows} rows of {n}")
        self._row("raw-insert-many", n, seconds, "baseline", self.statements - s0)

    def _advance(self, bar: TaskID) -> Any:
        def update(done: int) -> None:
            self.progress.update(bar, completed=done)

        return update

    def process_paths(self, expected: Any) -> None:
        """``process`` (history on), then the same queue again with history off."""
        n, (kept, first, last) = self.profile.tasks, floors.snapshot_queue(self.engine)
        self.gates.require(kept == n, "copy", "process", f"{kept} queue rows kept of {n}")
        maintenance(self.engine)  # as before the history-off drain (not timed)
        self.process_path("process", expected, (first, last))
        self._reset()
        floors.forget_history(self.engine, first, last)
        queued = floors.restore_queue(self.engine)
        self.gates.require(queued == n, "copy", HISTORY_OFF, f"{queued} queued of {n}")
        maintenance(self.engine)
        self.bus.settings.history_retention_days = 0
        try:
            self.process_path(HISTORY_OFF, expected, (first, last))
        finally:
            self.bus.settings.history_retention_days = HISTORY_DAYS

    def process_path(self, path: str, expected: Any, ids: tuple[int, int]) -> None:
        n, bus = self.profile.tasks, self.bus
        history = path != HISTORY_OFF
        label = "process: bus.process_tasks" + ("" if history else " (history off)")
        bar = self._bar(label, n)
        applied = failed = 0

        def on_progress(result: ProcessResult) -> None:
            self.progress.update(bar, completed=applied + result.applied)

        s0 = self.statements
        start = time.perf_counter()
        with self.hooks.wrap(path):
            while True:
                result = bus.process_tasks(on_progress=on_progress).get(CONNECTOR_NAME)
                if result is None:
                    break
                applied, failed = applied + result.applied, failed + result.failed
                if result.stopped or not result.ran or result.applied + result.failed == 0:
                    break
        seconds = time.perf_counter() - start
        statements = self.statements - s0
        self.gates.counts(path, logged=n, applied=applied, failed=failed, queued=bus.queue_size())
        self.gates.content(path, self.engine, expected)
        # One record per applied task (state applied) with history on, none with it off.
        records, applied_records = floors.history_counts(self.engine, *ids)
        want = applied if history else 0
        self.gates.require(
            records == want and applied_records == want,
            "history",
            path,
            f"{records} records ({applied_records} applied) of {applied} applied tasks, "
            f"{want} expected",
        )
        self._row(path, n, seconds, statements=statements)

    def raw_floor(self, expected: Any) -> None:
        """The per-task floor: each task's lookups and write on their own (``rawapply``)."""
        applier = RawApplier(self.engine, self.bus.registry)
        self._floor(
            RAW_FLOOR,
            "raw SQL floor",
            expected,
            lambda batch, advance: floors.raw_process(self.engine, applier, batch, advance),
        )

    def setwise_floor(self, expected: Any) -> None:
        """The set-wise floor: per batch one lookup per type, grouped writes (``setwise``)."""
        applier = SetwiseApplier(self.engine, self.bus.registry)
        self._floor(
            SETWISE_FLOOR,
            "raw set-wise floor",
            expected,
            lambda batch, advance: setwise_process(self.engine, applier, batch, advance),
        )
        row = self.report.row(SETWISE_FLOOR)
        assert row is not None
        row.note = (
            f"{applier.writes:,} of the {row.tasks:,} tasks written: in each batch the last "
            "operation per key (post, user-role binding, page) decides"
        )

    def _floor(
        self,
        path: str,
        label: str,
        expected: Any,
        drain: Callable[[int, Callable[[int], None]], tuple[float, int]],
    ) -> None:
        """Reset the content, fill the floor's queue copy, drain it timed, gate the result."""
        n = self.profile.tasks
        self._reset()
        queued = floors.fill_queue(self.engine)
        self.gates.require(queued == n, "copy", path, f"{queued} queued of {n}")
        bar = self._bar(label, n)
        s0 = self.statements
        with self.hooks.wrap(path):
            seconds, applied = drain(self.report.batch_size, self._advance(bar))
        statements = self.statements - s0
        left = floors.queued_in_copy(self.engine)
        self.gates.counts(path, logged=n, applied=applied, failed=0, queued=left)
        self.gates.content(path, self.engine, expected)
        self._row(path, n, seconds, "baseline", statements)

    # -- peers ----------------------------------------------------------------------------------
    def peers(self) -> None:
        backends = {"procrastinate": ("postgresql",), "huey": ("sqlite",)}
        for name in PEERS:
            reason = self._peer_skipped(name, backends.get(name, ("sqlite", "postgresql")))
            if reason is None:
                self._peer(name)
            else:
                self.report.skipped.append({"path": name, "reason": reason})

    def _peer_skipped(self, name: str, backends: tuple[str, ...]) -> str | None:
        if "peers" in self.hooks.skip:
            return "left out on request (--skip peers)"
        if self.backend not in backends:
            return f"runs on {backends[0]} only (this run is on {self.backend})"
        if not installed(name):
            return "not installed (pip install -e '.[bench]')"
        if self.profile.peer_tasks <= 0:
            return f"the {self.profile.name} profile has no peer phase"
        if name == "celery":
            return redis_unreachable(self._redis_url())
        return None

    @staticmethod
    def _redis_url() -> str:
        return os.environ.get("SYNCBUS_BENCH_REDIS_URL") or REDIS_URL

    def _peer(self, name: str) -> None:
        m = self.profile.peer_tasks
        self._reset()
        bar_in = self._bar(f"{name}: enqueue", m)
        bar_work = self._bar(f"{name}: worker", m)

        def rows() -> Iterator[list[Any]]:
            return floors.payload_rows(self.engine, m)

        def before_work() -> None:
            maintenance(self.engine)  # as before the bus's drains (not timed)

        url, registry = self.scratch.url, self.bus.registry
        args = (rows, self._advance(bar_in), self._advance(bar_work), before_work)
        note = ""
        with self.hooks.wrap(name):
            if name == "procrastinate":
                run: PeerRun = run_procrastinate(url, registry, *args)
            elif name == "huey":
                run = run_huey(url, registry, *args)
            else:
                from syncbus.bench import celerypeer  # optional: the bench extra

                run = celerypeer.run_celery(url, self._redis_url(), *args)
                note = "broker persistence: " + celerypeer.redis_persistence(self._redis_url())
        self.gates.counts(
            name, logged=run.tasks, applied=run.executed, failed=0, queued=run.queued_after
        )
        self.gates.require(run.tasks == m, "counts", name, f"{run.tasks} jobs of {m}")
        self.gates.content(name, self.engine, ReferenceModel.of(self.workload, m))
        self._row(f"{name} enqueue", m, run.enqueue_seconds, "peer")
        self.report.rows[-1].note = note
        self._row(f"{name} work", m, run.work_seconds, "peer")
        self.report.rows[-1].note = run.note

    # -- end to end -----------------------------------------------------------------------------
    def end_to_end(self) -> None:
        n = self.profile.e2e_tasks
        if "end-to-end" in self.hooks.skip:
            self.report.skipped.append({"path": "end-to-end", "reason": "left out on request"})
            return
        if n <= 0:
            return
        log_row, proc_row = self.report.row("log-api"), self.report.row("process")
        assert log_row is not None and proc_row is not None
        # One task costs 1/L of logging and 1/P of processing, done one after the other; log at a
        # third of that capacity (logging and processing contend for the GIL and, on SQLite, the
        # write lock, so the serial estimate is optimistic).
        rate = E2E_LOAD / (1 / log_row.tasks_per_s + 1 / proc_row.tasks_per_s)
        self._reset()
        tasks = list(self.workload.tasks(n))
        bar = self._bar(f"end to end at {rate:.0f} tasks/s", n)
        s0 = self.statements
        with self.hooks.wrap("end-to-end"):
            run = run_e2e(self.bus, tasks, rate, self._advance(bar))
        statements = self.statements - s0
        self.gates.counts(
            "end-to-end",
            logged=n,
            applied=run.applied,
            failed=run.failed,
            queued=self.bus.queue_size(),
        )
        self.gates.require(
            len(run.latencies) == n,
            "latency",
            "end-to-end",
            f"{len(run.latencies)} of {n} tasks seen applied",
        )
        self.gates.content("end-to-end", self.engine, ReferenceModel.of(self.workload, n))
        self._row("end-to-end", n, run.seconds, statements=statements)
        ms = [x * 1000 for x in run.latencies]
        self.report.latency = {
            "tasks": n,
            "rate_target": round(rate, 1),
            "rate_achieved": round(run.rate_achieved, 1),
            "schedule_lag_max_ms": round(run.lag_max * 1000, 2),
            "p50_ms": round(percentile(ms, 50), 2),
            "p95_ms": round(percentile(ms, 95), 2),
            "p99_ms": round(percentile(ms, 99), 2),
            "max_ms": round(max(ms), 2),
            "mean_ms": round(sum(ms) / len(ms), 2),
        }

    # -- HTTP ------------------------------------------------------------------------------------
    def http_paths(self) -> None:
        """The HTTP logging paths, on one server; the server stops even when a gate fails."""
        m = min(self.profile.http_tasks, self.profile.tasks)
        reason = None
        if "http" in self.hooks.skip:
            reason = "left out on request"
        elif m <= 0:
            reason = f"the {self.profile.name} profile has no HTTP phase"
        if reason is not None:
            self.report.skipped += [{"path": p, "reason": reason} for p in HTTP_PATHS]
            return
        batch = min(self.report.batch_size, http.MAX_BATCH)
        with http.serve(self.bus) as client:
            self._http_phase(
                "log-http-single",
                m,
                "1 task per POST",
                lambda tasks, phase, advance: http.log_single(
                    client, CONNECTOR_NAME, tasks, phase, advance
                ),
            )
            self._http_phase(
                "log-http-concurrent",
                m,
                f"1 task per POST, {HTTP_CLIENTS} clients at once",
                lambda tasks, phase, advance: http.log_concurrent(
                    client, CONNECTOR_NAME, tasks, HTTP_CLIENTS, phase, advance
                ),
            )
            self._http_phase(
                "log-http-batch",
                m,
                f"{batch} tasks per POST",
                lambda tasks, phase, advance: http.log_batch(
                    client, CONNECTOR_NAME, tasks, batch, phase, advance
                ),
            )
        if batch != self.report.batch_size:
            row = self.report.row("log-http-batch")
            assert row is not None
            note = f"{batch} tasks per request (the batch endpoint's limit)"
            row.note = f"{row.note}; {note}" if row.note else note
        # Shown beside the other logging rows (they ran last, see the module's docstring).
        rows = self.report.rows
        moved = [r for r in rows if r.path in HTTP_PATHS]
        rest = [r for r in rows if r.path not in HTTP_PATHS]
        at = next((i + 1 for i, r in enumerate(rest) if r.path == "raw-insert-many"), len(rest))
        self.report.rows = rest[:at] + moved + rest[at:]

    def _http_phase(
        self,
        path: str,
        m: int,
        label: str,
        send: Callable[[Iterator[BenchTask], str, http.Advance], http.HttpLog],
    ) -> None:
        maintenance(self.engine)  # the dead rows of the earlier phases (not timed)
        before = self.bus.queue_size()
        bar = self._bar(f"HTTP log: {label}", m)
        s0 = self.statements
        with self.hooks.wrap(path):
            log = send(self.workload.tasks(m), path, self._advance(bar))
        statements = self.statements - s0
        queued = self.bus.queue_size()
        self.gates.require(
            before == 0 and log.sent == m and len(log.ids) == m and queued == m,
            "log",
            path,
            f"sent={log.sent} created={len(log.ids)} queued={queued} of {m} "
            f"(queued before: {before})",
        )
        row = Row(self.backend, path, m, log.seconds, peak_rss_mb())
        row.statements = statements
        notes = []
        if m < self.profile.tasks:
            notes.append(
                f"the first {m:,} of the {self.profile.tasks:,} tasks (profile field "
                "http_tasks); its ratio compares rates (tasks/s)"
            )
        if log.client_cpu_seconds is not None:
            notes.append(
                f"{HTTP_CLIENTS} clients in a process of their own, which used "
                f"{log.client_cpu_seconds / m * 1000:.2f} ms of CPU a request"
            )
        row.note = "; ".join(notes)
        self.report.rows.append(row)
        # Not processed by anything: remove them, so the next phase starts from an empty queue.
        # (The concurrent path's ids are not in the order of its tasks: min and max.)
        t = task_table
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.task_id.between(min(log.ids), max(log.ids))))
        left = self.bus.queue_size()
        self.gates.require(left == 0, "cleanup", path, f"{m} HTTP tasks removed, {left} left")

    def headline(self) -> None:
        rep = self.report
        rep.set_ratio("log-api", "raw-insert-single")
        rep.set_ratio("log-http-single", "raw-insert-single")
        rep.set_ratio("log-http-concurrent", "raw-insert-single")
        rep.set_ratio("log-http-batch", "raw-insert-many")
        # Every processing row against the set-wise floor (the limit), the per-task floor too;
        # process/raw-floor (the weaker baseline) is in the headline and the last line.
        for path in ("process", HISTORY_OFF, RAW_FLOOR):
            rep.set_ratio(path, SETWISE_FLOOR)
        for peer in PEERS:
            rep.set_ratio(f"{peer} enqueue", "log-api")
            rep.set_ratio(f"{peer} work", "process")
        rep.headline = {
            "process/setwise-floor": rep.ratio_of("process", SETWISE_FLOOR),
            "process/raw-floor": rep.ratio_of("process", RAW_FLOOR),
            "log/raw-insert": rep.ratio_of("log-api", "raw-insert-single"),
            "syncbus/procrastinate": rep.ratio_of("process", "procrastinate work"),
            "syncbus/huey": rep.ratio_of("process", "huey work"),
            "syncbus/celery": rep.ratio_of("process", "celery work"),
            "log/raw-insert-many": rep.ratio_of("log-api", "raw-insert-many"),
            "syncbus-log/procrastinate-enqueue": rep.ratio_of("log-api", "procrastinate enqueue"),
            "syncbus-log/huey-enqueue": rep.ratio_of("log-api", "huey enqueue"),
            "syncbus-log/celery-enqueue": rep.ratio_of("log-api", "celery enqueue"),
            "log-http-single/raw-insert": rep.ratio_of("log-http-single", "raw-insert-single"),
            "log-http-concurrent/raw-insert": rep.ratio_of(
                "log-http-concurrent", "raw-insert-single"
            ),
            "log-http-batch/raw-insert-many": rep.ratio_of("log-http-batch", "raw-insert-many"),
            # What history costs: the process path with history on against the same drain off.
            "process/history-off": rep.ratio_of("process", HISTORY_OFF),
        }
        history = rep.headline["process/history-off"]
        if history is not None:
            rep.extra_summary["history-on/off"] = f"{history:.2f}"
