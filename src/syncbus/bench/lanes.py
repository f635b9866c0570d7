"""The lanes profiles: one ``Ordering.ENTITY`` connector drained by 1, 2 and 4 ``syncbus worker``
processes, beside the same tasks under an ``Ordering.CONNECTOR`` connector (PostgreSQL only).

Every drain starts from a freshly prepared, identical queue: the content and its audit are
emptied, ``tasks`` UpdateObject tasks are logged round-robin over ``keys`` entities (task ``n``
sets entity ``e{n % keys}`` to ``n``), the database is vacuumed, all outside the timer. The
connector is then disabled, the workers are started (``syncbus worker --workers 1``, each a
process of its own, with the scheduler off) and, once every one has said it started, the
connector is enabled and one NOTIFY wakes them all: the timer runs from there until the queue
is seen empty (polled every ``POLL_SECONDS``; the same poll samples what the database sessions
wait for, ``pg_stat_activity``). The workers are then stopped with SIGTERM and must exit 0.

Gates after every drain: every run's ``applied`` / ``failed`` (the workers print one line per
run) add up to the tasks logged with none failed, the queue is empty, an audit trigger on the
counter table shows every entity's updates applied exactly once and in order, and every entity
holds its last value. A failed gate raises :class:`BenchGateError`.

Where the time goes: one more ENTITY drain by one worker runs with ``IntegrationBus.process_tasks``
under cProfile (``profworker``); its top functions by cumulative time go into the report. The
profiler slows that drain, which is why it is not one of the timed ones.
"""

from __future__ import annotations

import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from rich.progress import Progress

import syncbus
from syncbus.bench.environment import Scratch, durability, machine, maintenance
from syncbus.bench.gate import BenchGateError, Gates
from syncbus.bench.prepare import BenchHooks
from syncbus.bench.report import BenchReport, Row
from syncbus.bench.workload import WORKLOAD_VERSION, Profile
from syncbus.bus import IntegrationBus
from syncbus.connector import BaseIntegrationConnector
from syncbus.content.types import ObjectType
from syncbus.enums import Ordering, TaskDataType, TaskType
from syncbus.errors import ConfigurationError, SyncBusError
from syncbus.intake import TaskRequest
from syncbus.model import InternalObject
from syncbus.store.dialect import dialect_of

COUNTER_TYPE = ObjectType(
    "lanes.counter",
    "bench_lanes_counter",
    "counter_id",
    code_name_column="counter_name",
    columns={"counter_name": str, "n": int},
)
AUDIT_TABLE = "bench_lanes_audit"
WORKER_COUNTS = (1, 2, 4)
POLL_SECONDS = 0.05
START_SECONDS = 60.0
DRAIN_SECONDS = 900.0
STALL_SECONDS = 0.3  # a 200-task batch commits every ~0.1 s here: 0.3 s without one is a stall
SETTLE_SECONDS = 1.0  # after the last "started": their LISTEN connections are up
PROFILE_TOP = 10
PROFILE_SELF_TOP = 8
PROFILE_OWN_TOP = 12
_RUN_LINE = re.compile(r"^(\S+): applied (\d+), failed (\d+)")


class LaneBenchConnector(BaseIntegrationConnector):
    """Each task sets counter ``key`` to ``n``; one lane per counter (loaded by the workers
    from its class path)."""

    connector_name = "LaneBench"
    display_name = "syncbus bench: lanes (ENTITY)"
    ordering = Ordering.ENTITY

    def prepare_internal_object(
        self, obj: Any, task_type: TaskType, data_type: TaskDataType, site_name: str | None
    ) -> InternalObject:
        return InternalObject("lanes.counter", {"counter_name": obj["key"], "n": obj["n"]})


class QueueBenchConnector(LaneBenchConnector):
    """The same tasks under ``Ordering.CONNECTOR``: one queue, one run at a time."""

    connector_name = "QueueBench"
    display_name = "syncbus bench: lanes (CONNECTOR)"
    ordering = Ordering.CONNECTOR


@dataclass
class Drain:
    """One timed (or profiled) drain: which connector, by how many worker processes."""

    path: str
    connector: type[LaneBenchConnector]
    workers: int
    profile_to: Path | None = None


@dataclass
class DrainResult:
    seconds: float
    applied: int
    failed: int
    peak_rss_kb: int
    waits: Counter[str] = field(default_factory=Counter)
    samples: int = 0
    runs: int = 0  # connector runs that applied something (one line each in the workers' output)
    worker_cpu_s: float = 0.0  # user + system CPU of the worker processes during the drain
    db_cpu_s: float = 0.0  # the same for the server processes of the workers' sessions
    machine_busy: float = 0.0  # share of all CPUs' time not idle during the drain (any process)
    # Times the queue did not move for STALL_SECONDS or more (seen by the poll), in seconds.
    stalls: list[float] = field(default_factory=list)


def entity(n: int, keys: int) -> str:
    return f"e{n % keys:05d}"


def expected_updates(tasks: int, keys: int) -> dict[str, list[int]]:
    """Each entity's values, in the order they must be written."""
    out: dict[str, list[int]] = defaultdict(list)
    for n in range(1, tasks + 1):
        out[entity(n, keys)].append(n)
    return dict(out)


def run_lanes(
    profile: Profile, scratch: Scratch, progress: Progress, batch_size: int, hooks: BenchHooks
) -> BenchReport:
    if scratch.backend != "postgresql":  # run_bench refuses earlier; this is the last guard
        raise ConfigurationError(sqlite_refusal(profile.name))
    bus = IntegrationBus(scratch.url, batch_size=batch_size)
    gates = Gates(bus.registry, hooks.before_gate)
    report = BenchReport(
        profile.name, scratch.backend, WORKLOAD_VERSION, batch_size, scratch.name, {}, {}
    )
    report.gates = gates.passed
    expected = expected_updates(profile.tasks, profile.keys)
    drains = [Drain("CONNECTOR, 1 worker", QueueBenchConnector, 1)]
    drains += [
        Drain(f"ENTITY, {w} worker{'s' if w > 1 else ''}", LaneBenchConnector, w)
        for w in WORKER_COUNTS
    ]
    try:
        bus.register_object_type(COUNTER_TYPE)
        bus.create_schema()
        bus.register_connector(LaneBenchConnector)
        bus.register_connector(QueueBenchConnector)
        _install_audit(bus.engine)
        report.machine, report.durability = machine(bus.engine), durability(bus.engine)
        bench = _LaneBench(bus, scratch.url, profile, batch_size, progress, gates, expected)
        results: dict[str, list[DrainResult]] = defaultdict(list)
        for round_no in range(max(1, profile.runs)):
            for drain in drains:
                suffix = f" (round {round_no + 1})" if profile.runs > 1 else ""
                results[drain.path].append(bench.drain(drain, suffix))
        for drain in drains:
            report.rows.append(
                _row(scratch.backend, drain.path, profile.tasks, results[drain.path])
            )
        with tempfile.TemporaryDirectory(prefix="syncbus-lanes-prof-") as tmp:
            out = Path(tmp) / "worker.prof"
            prof = Drain("ENTITY, 1 worker (profiled)", LaneBenchConnector, 1, out)
            result = bench.drain(prof, "")
            report.where_time_goes = summarise_profile(out, result.seconds, prof.path)
    finally:
        bus.close()
    _ratios(report)
    return report


def sqlite_refusal(profile: str) -> str:
    return (
        f"the {profile} profile runs on PostgreSQL only: it measures several worker processes "
        "sharing one ENTITY connector, lane by lane, and SQLite runs one writer at a time (an "
        "ENTITY run there holds the connector's lease, so a second worker only waits). Pass "
        "--db postgresql://user@host/anydb"
    )


class _LaneBench:
    def __init__(
        self,
        bus: IntegrationBus,
        url: str,
        profile: Profile,
        batch_size: int,
        progress: Progress,
        gates: Gates,
        expected: dict[str, list[int]],
    ) -> None:
        self.bus, self.url, self.profile = bus, url, profile
        self.batch_size, self.progress, self.gates = batch_size, progress, gates
        self.expected = expected

    def drain(self, drain: Drain, suffix: str) -> DrainResult:
        name = drain.connector.connector_name
        assert name is not None
        n = self.profile.tasks
        phase = drain.path + suffix
        self._fill(name, phase)
        bar = self.progress.add_task(f"[postgresql] {phase}", total=n)
        self.bus.set_connector_enabled(name, False)
        with ExitStack() as stack:
            procs = [self._start_worker(stack, drain) for _ in range(drain.workers)]
            _wait_started(procs)
            time.sleep(SETTLE_SECONDS)
            result = self._timed(name, bar, procs)
            outputs = _stop(procs)
        for out in outputs:
            for line in out.splitlines():
                m = _RUN_LINE.match(line.strip())
                if m and m.group(1) == name:
                    result.applied += int(m.group(2))
                    result.failed += int(m.group(3))
                    result.runs += 1
        applied, failed = result.applied, result.failed
        self.gates.counts(
            phase,
            logged=n,
            applied=applied,
            failed=failed,
            queued=self.bus.queue_size(name),
        )
        self._gate_order(phase)
        return result

    # -- before the timer ----------------------------------------------------------------------
    def _fill(self, name: str, phase: str) -> None:
        """Empty content and audit, log the tasks, vacuum: an identical queue every time."""
        table = self.bus.registry.table("lanes.counter")
        with self.bus.engine.begin() as conn:
            conn.execute(table.delete())
            conn.exec_driver_sql(f"TRUNCATE {AUDIT_TABLE}")
        n, keys = self.profile.tasks, self.profile.keys
        logged = 0
        for chunk in _chunks(n, 1_000):
            requests = [
                TaskRequest({"key": entity(i, keys), "n": i}, task_type="UpdateObject")
                for i in chunk
            ]
            outcomes = self.bus.log_tasks(name, requests)
            logged += sum(1 for o in outcomes if o.task_id is not None)
        queued = self.bus.queue_size(name)
        detail = f"logged={logged} queued={queued} of {n}"
        self.gates.require(logged == n == queued, "log", f"{phase}: fill", detail)
        maintenance(self.bus.engine)

    def _start_worker(self, stack: ExitStack, drain: Drain) -> _Worker:
        output = stack.enter_context(tempfile.TemporaryFile(mode="w+"))  # noqa: SIM115
        cli = ["worker", "--db", self.url, "--workers", "1"]
        cli += ["--scheduler-interval", "0", "--batch-size", str(self.batch_size)]
        cli += ["--grace", "30"]
        if drain.profile_to is None:
            command = [sys.executable, "-m", "syncbus.cli", *cli]
        else:
            command = [sys.executable, "-m", "syncbus.bench.profworker", str(drain.profile_to)]
            command += cli
        source = str(Path(syncbus.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, "COLUMNS": "200"}
        proc = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        stack.callback(_kill, proc)
        return _Worker(proc, output)

    # -- the timer -----------------------------------------------------------------------------
    def _timed(self, name: str, bar: Any, procs: list[_Worker]) -> DrainResult:
        n = self.profile.tasks
        waits: Counter[str] = Counter()
        samples = 0
        peak: dict[int, int] = {}
        with self.bus.engine.connect() as conn:
            backends0 = {pid: _cpu_s(pid) for pid in _backend_pids(conn)}
        cpu0, machine0 = [_cpu_s(w.proc.pid) for w in procs], _machine_times()
        start = time.perf_counter()
        self.bus.set_connector_enabled(name, True)  # the go: enabled, every worker woken
        with self.bus.engine.begin() as conn:
            dialect_of(conn).notify(conn, name)
        deadline = start + DRAIN_SECONDS
        moved_at, last_left, stalls = start, n, [0.0]
        with self.bus.engine.connect() as conn:
            while True:
                left = self.bus.queue_size(name)
                now = time.perf_counter()
                if left != last_left:
                    stalls.append(now - moved_at)
                    moved_at, last_left = now, left
                if left == 0:
                    break
                for w in procs:
                    peak[w.proc.pid] = max(peak.get(w.proc.pid, 0), _vm_hwm_kb(w.proc.pid))
                    if w.proc.poll() is not None:
                        raise SyncBusError(f"a worker exited mid-drain: {w.said()}")
                samples += 1
                waits.update(_session_waits(conn))
                self.progress.update(bar, completed=n - left)
                if now > deadline:
                    raise BenchGateError("counts", name, f"{left} tasks left after the deadline")
                time.sleep(POLL_SECONDS)
        seconds = now - start
        with self.bus.engine.connect() as conn:
            backends = _backend_pids(conn)
        db_cpu = sum(_cpu_s(pid) - backends0.get(pid, 0.0) for pid in backends)
        cpu = sum(_cpu_s(w.proc.pid) - c for w, c in zip(procs, cpu0, strict=True))
        busy, idle = (b - a for a, b in zip(machine0, _machine_times(), strict=True))
        for w in procs:
            peak[w.proc.pid] = max(peak.get(w.proc.pid, 0), _vm_hwm_kb(w.proc.pid))
        self.progress.update(bar, completed=n)
        result = DrainResult(seconds, 0, 0, max(peak.values(), default=0), waits, samples)
        result.worker_cpu_s = cpu
        result.db_cpu_s = db_cpu
        result.stalls = [x for x in stalls if x >= STALL_SECONDS]
        result.machine_busy = busy / (busy + idle) if busy + idle else 0.0
        return result

    # -- after ---------------------------------------------------------------------------------
    def _gate_order(self, phase: str) -> None:
        """The audit: each entity's values written once each, in order; each holds its last."""
        engine = self.bus.engine
        if self.gates.before_gate is not None:
            self.gates.before_gate(phase, engine)
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(f"SELECT name, n FROM {AUDIT_TABLE} ORDER BY id").all()
            table = self.bus.registry.table("lanes.counter")
            final = {
                str(k): int(v) for k, v in conn.execute(sa.select(table.c.counter_name, table.c.n))
            }
        seen: dict[str, list[int]] = defaultdict(list)
        for name, value in rows:
            seen[str(name)].append(int(value))
        wrong = sorted(
            k for k in self.expected.keys() | seen.keys() if seen.get(k) != self.expected.get(k)
        )
        detail = f"{len(rows)} audited writes over {len(seen)} entities"
        if wrong:
            k = wrong[0]
            detail = (
                f"{len(wrong)} entities with lost, doubled or reordered writes (e.g. {k!r}: "
                f"expected {self.expected.get(k, [])[:6]}..., written {seen.get(k, [])[:6]}...)"
            )
        self.gates.require(not wrong, "order", phase, detail)
        last = {k: v[-1] for k, v in self.expected.items()}
        stale = sorted(k for k in last.keys() | final.keys() if final.get(k) != last.get(k))
        detail = (
            f"{len(final)} entities hold their last value"
            if not stale
            else (
                f"{len(stale)} entities differ (e.g. {stale[0]!r}: expected {last.get(stale[0])}, "
                f"found {final.get(stale[0])})"
            )
        )
        self.gates.require(not stale, "content", phase, detail)


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    output: IO[str]

    def said(self) -> str:
        self.output.flush()
        self.output.seek(0)
        return self.output.read()


def _chunks(n: int, size: int) -> Iterator[range]:
    for lo in range(1, n + 1, size):
        yield range(lo, min(lo + size, n + 1))


def _wait_started(procs: list[_Worker]) -> None:
    deadline = time.monotonic() + START_SECONDS
    waiting = list(procs)
    while waiting:
        for w in list(waiting):
            if "syncbus worker started" in w.said():
                waiting.remove(w)
            elif w.proc.poll() is not None or time.monotonic() > deadline:
                raise SyncBusError(
                    f"a worker did not start ({w.proc.returncode}): {w.said()[-2000:]}"
                )
        time.sleep(0.05)


def _stop(procs: list[_Worker]) -> list[str]:
    for w in procs:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    outputs = []
    for w in procs:
        code = w.proc.wait(60)
        said = w.said()
        if code != 0:
            raise SyncBusError(f"a worker exited with status {code}: {said[-2000:]}")
        outputs.append(said)
    return outputs


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/PID/stat``)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_pids(conn: sa.Connection) -> list[int]:
    """The server processes of this database's other client sessions (the server runs on this
    machine: the bench reads their CPU from ``/proc``)."""
    pids = conn.exec_driver_sql(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    ).scalars()
    out = [int(p) for p in pids]
    conn.rollback()
    return out


def _machine_times() -> tuple[int, int]:
    """(busy, idle) jiffies of all CPUs together since boot (``/proc/stat``)."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]) - idle, idle


def _row(backend: str, path: str, tasks: int, results: list[DrainResult]) -> Row:
    """The median round (by time) as the row; every round's rate and what it waited on in the
    note."""
    ordered = sorted(results, key=lambda r: r.seconds)
    mid = ordered[(len(ordered) - 1) // 2]
    row = Row(backend, path, tasks, mid.seconds, 0.0)
    row.peak_rss_mb = max(r.peak_rss_kb for r in results) / 1024
    rates = ", ".join(f"{tasks / r.seconds:,.0f}" for r in results)
    parts = [f"tasks/s per round {rates}"] if len(results) > 1 else []
    parts.append(f"runs {', '.join(str(r.runs) for r in results)}")
    cpu = ", ".join(
        f"{r.worker_cpu_s / r.seconds:.2f} + {r.db_cpu_s / r.seconds:.2f}" for r in results
    )
    parts.append(f"CPU per wall second, workers + their database sessions: {cpu}")
    per_task = ", ".join(
        f"{1000 * r.worker_cpu_s / tasks:.2f} + {1000 * r.db_cpu_s / tasks:.2f}" for r in results
    )
    parts.append(f"CPU ms per task, workers + database: {per_task}")
    parts.append(f"machine CPUs busy {', '.join(f'{100 * r.machine_busy:.0f} %' for r in results)}")
    stalls = ", ".join(f"{len(r.stalls)} ({sum(r.stalls):.1f} s)" for r in results)
    parts.append(f"queue still for >= {STALL_SECONDS} s: {stalls}")
    waits: Counter[str] = Counter()
    for r in results:
        waits.update(r.waits)
    parts.append(_waits_note(waits, sum(r.samples for r in results)))
    row.note = "; ".join(p for p in parts if p)
    return row


def _session_waits(conn: sa.Connection) -> Counter[str]:
    """What this database's other active sessions wait for right now (``CPU`` when nothing)."""
    rows = conn.exec_driver_sql(
        "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*) "
        "FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
        "AND pid <> pg_backend_pid() GROUP BY 1"
    ).all()
    conn.rollback()
    return Counter({str(k): int(v) for k, v in rows})


def _waits_note(waits: Counter[str], samples: int) -> str:
    if not samples:
        return ""
    total = sum(waits.values())
    top = ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in waits.most_common(4))
    return f"database sessions active per sample {total / samples:.2f} ({samples} samples)" + (
        f": {top}" if total else ""
    )


def _install_audit(engine: sa.Engine) -> None:
    """Every write to the counter table leaves an audit row (lost, doubled or reordered
    tasks show there)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {AUDIT_TABLE} (id bigserial PRIMARY KEY, name text NOT NULL, "
            "n int NOT NULL)"
        )
        conn.exec_driver_sql(
            f"""CREATE FUNCTION bench_lanes_audit() RETURNS trigger AS $$
            BEGIN INSERT INTO {AUDIT_TABLE} (name, n) VALUES (NEW.counter_name, NEW.n);
            RETURN NEW; END $$ LANGUAGE plpgsql"""
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER bench_lanes_audit BEFORE INSERT OR UPDATE ON bench_lanes_counter "
            "FOR EACH ROW EXECUTE FUNCTION bench_lanes_audit()"
        )


# -- where the time goes ---------------------------------------------------------------------
def _where(key: tuple[str, int, str]) -> str:
    path, line, func = key
    if path == "~":
        return func.strip("<>")
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func}  ({path}:{line})"


def _folded(shown: list[dict[str, Any]], calls: int, cumulative: float, total: float) -> bool:
    """Whether a function is a wrapper (or the wrapped) of one already shown: the same number
    of calls and within 3 % of its cumulative time (SQLAlchemy's execute chain, the run's call
    chain down to the batch loop); those add no information to the table."""
    return any(
        r["calls"] == calls and abs(r["cumulative_s"] - cumulative) <= 0.03 * max(total, 1e-9)
        for r in shown
    )


def summarise_profile(path: Path, seconds: float, label: str) -> dict[str, Any]:
    """The worker's ``process_tasks`` profile: top functions by cumulative and by self time."""
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = float(stats.total_tt)  # type: ignore[attr-defined]

    def rows(index: int, top: int, own: bool = False) -> list[dict[str, Any]]:
        ordered = sorted(raw.items(), key=lambda kv: -kv[1][index])
        out: list[dict[str, Any]] = []
        for key, (_cc, nc, tt, ct, _callers) in ordered:
            if key[2] == "profiled" or (key[0] == "~" and "disable" in key[2]):
                continue
            if own and "/syncbus/" not in key[0]:
                continue
            if index == 3 and _folded(out, int(nc), ct, total):
                continue
            out.append(
                {
                    "function": _where(key),
                    "calls": int(nc),
                    "self_s": round(tt, 3),
                    "cumulative_s": round(ct, 3),
                    "percent": round(100 * (ct if index == 3 else tt) / total, 1) if total else 0,
                }
            )
            if len(out) == top:
                break
        return out

    return {
        "drain": label,
        "drain_seconds": round(seconds, 2),
        "profiled_seconds": round(total, 2),
        "by_cumulative": rows(3, PROFILE_TOP),
        "by_self": rows(2, PROFILE_SELF_TOP),
        "syncbus_by_cumulative": rows(3, PROFILE_OWN_TOP, own=True),
    }


def _ratios(report: BenchReport) -> None:
    one = "ENTITY, 1 worker"
    for w in WORKER_COUNTS[1:]:
        report.set_ratio(f"ENTITY, {w} workers", one)
    report.set_ratio(one, "CONNECTOR, 1 worker")
    two_one = report.ratio_of("ENTITY, 2 workers", one)
    four_one = report.ratio_of("ENTITY, 4 workers", one)
    four_two = report.ratio_of("ENTITY, 4 workers", "ENTITY, 2 workers")
    cost = report.ratio_of(one, "CONNECTOR, 1 worker")
    report.headline = {
        "lanes-2/1": two_one,
        "lanes-4/1": four_one,
        "lanes-4/2": four_two,
        "entity-1/connector-1": cost,
    }
    for key, value in report.headline.items():
        report.extra_summary[key] = "n/a" if value is None else f"{value:.2f}"
    report.targets = [
        _target("2 workers >= 1.5x one worker (ENTITY)", two_one, 1.5),
        _target("4 workers no slower than 2 (ENTITY)", four_two, 1.0),
    ]


def _target(what: str, value: float | None, at_least: float) -> dict[str, Any]:
    return {
        "target": what,
        "measured": None if value is None else round(value, 3),
        "met": value is not None and value >= at_least,
    }
