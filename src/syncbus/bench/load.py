"""The load profiles: a first synchronisation, every object and page created once.

The workload's initial load (``Workload.initial_load``: new forum posts, articles and
memberships, each created once, the kinds interleaved) is logged through the bus's batch
logging API and the queue rows kept (not timed). The bus then drains that queue into content
holding only the setup records, twice per round:

1. ``load-history-off``: history off;
2. ``load``: history on (the default).

Before each drain (not timed): the content reset (what the last drain created removed), its
history records removed, the very same queue rows put back, the database vacuumed and analysed
(PostgreSQL: the new rows' tables are empty and their statistics say so, as before any first
load) or its WAL checkpointed. Each row is its median round.

What this measures that the mixed stream does not: the cost of creating rows (ids, inserts of
new nodes and documents, lookups that find nothing) over a table that grows from empty during
the drain. Gates after every drain: the content equals the reference model, every task was
applied and none failed, nothing is left queued, one ``applied`` history record per task with
history on and none with it off.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from rich.progress import Progress

from syncbus.bench import floors
from syncbus.bench.bursty import _log
from syncbus.bench.environment import Scratch, durability, machine, maintenance, reset_content
from syncbus.bench.gate import Gates
from syncbus.bench.prepare import BenchHooks, peak_rss_mb, prepare_bus
from syncbus.bench.reference import Content, ReferenceModel
from syncbus.bench.report import BenchReport, Row
from syncbus.bench.workload import CONNECTOR_NAME, WORKLOAD_VERSION, Profile, Workload
from syncbus.bus import IntegrationBus
from syncbus.model import ProcessResult

OFF, ON = "load-history-off", "load"
HISTORY_DAYS = 7  # history_retention_days for the drain with history on


@dataclass
class _Drain:
    seconds: float
    statements: int
    peak_rss_mb: float


def run_load(
    profile: Profile, scratch: Scratch, progress: Progress, batch_size: int, hooks: BenchHooks
) -> BenchReport:
    workload = Workload(profile)
    bus = IntegrationBus(scratch.url, batch_size=batch_size)
    gates = Gates(bus.registry, hooks.before_gate)
    report = BenchReport(
        profile.name, scratch.backend, WORKLOAD_VERSION, batch_size, scratch.name, {}, {}
    )
    report.gates = gates.passed
    n, rounds = profile.tasks, max(1, profile.runs)
    drains: dict[str, list[_Drain]] = {OFF: [], ON: []}
    try:
        prepare_bus(bus, workload, gates)
        floors.create_tables(bus.engine)
        report.machine, report.durability = machine(bus.engine), durability(bus.engine)
        _log(bus, workload, progress, gates, scratch.backend)
        ids = floors.snapshot_queue(bus.engine)[1:]
        expected = ReferenceModel.of(workload)
        runner = _Runner(bus, gates, hooks, progress, scratch.backend, n, ids)
        for round_no in range(rounds):
            for path in (OFF, ON):
                if round_no or path == ON:
                    runner.restore()
                maintenance(bus.engine)
                suffix = f" (round {round_no + 1})" if rounds > 1 else ""
                drains[path].append(runner.drain(path, suffix, expected))
    finally:
        bus.close()
    for path, runs in drains.items():
        report.rows.append(_row(scratch.backend, path, n, runs))
    report.set_ratio(ON, OFF)
    ratio = report.ratio_of(ON, OFF)
    report.headline = {"load/history-off": ratio}
    report.extra_summary["load/history-off"] = "n/a" if ratio is None else f"{round(ratio, 3):.2f}"
    return report


def _row(backend: str, path: str, n: int, runs: list[_Drain]) -> Row:
    """The median round's figures (the lower middle one of an even number of rounds)."""
    mid = sorted(runs, key=lambda r: r.seconds)[(len(runs) - 1) // 2]
    row = Row(backend, path, n, mid.seconds, max(r.peak_rss_mb for r in runs))
    row.statements = mid.statements
    if len(runs) > 1:
        each = ", ".join(f"{r.seconds:.2f}" for r in runs)
        spread = statistics.pstdev(r.seconds for r in runs)
        row.note = f"median of {len(runs)} rounds: {each} s (sd {spread:.2f} s)"
    return row


class _Runner:
    """The drains of one run: timed, then gated."""

    def __init__(
        self,
        bus: IntegrationBus,
        gates: Gates,
        hooks: BenchHooks,
        progress: Progress,
        backend: str,
        tasks: int,
        ids: tuple[int, int],
    ) -> None:
        self.bus, self.gates, self.hooks, self.progress = bus, gates, hooks, progress
        self.backend, self.tasks, self.ids = backend, tasks, ids
        self.statements = 0
        sa.event.listen(bus.engine, "before_cursor_execute", self._count)

    def _count(self, *_: Any) -> None:
        self.statements += 1

    def restore(self) -> None:
        """The content and the queue as they were before the first drain (not timed)."""
        engine = self.bus.engine
        reset_content(engine, self.bus.registry)
        floors.forget_history(engine, *self.ids)
        queued = floors.restore_queue(engine)
        self.gates.require(queued == self.tasks, "copy", "restore", f"{queued} queued")

    def drain(self, path: str, suffix: str, expected: Content) -> _Drain:
        n, bus = self.tasks, self.bus
        history = path == ON
        bus.settings.history_retention_days = HISTORY_DAYS if history else 0
        bar = self.progress.add_task(f"[{self.backend}] {path}{suffix}: bus.process_tasks", total=n)
        applied = failed = 0

        def on_progress(result: ProcessResult) -> None:
            self.progress.update(bar, completed=applied + result.applied)

        s0 = self.statements
        start = time.perf_counter()
        try:
            with self.hooks.wrap(path):
                while True:
                    result = bus.process_tasks(on_progress=on_progress).get(CONNECTOR_NAME)
                    if result is None:
                        break
                    applied, failed = applied + result.applied, failed + result.failed
                    if result.stopped or not result.ran or result.applied + result.failed == 0:
                        break
            seconds = time.perf_counter() - start
        finally:
            bus.settings.history_retention_days = HISTORY_DAYS
        statements = self.statements - s0
        rss = peak_rss_mb()
        self.gates.counts(path, logged=n, applied=applied, failed=failed, queued=bus.queue_size())
        self.gates.content(path, bus.engine, expected)
        records, applied_records = floors.history_counts(bus.engine, *self.ids)
        want = applied if history else 0
        self.gates.require(
            records == want and applied_records == want,
            "history",
            path,
            f"{records} records ({applied_records} applied) of {applied} applied tasks, "
            f"{want} expected",
        )
        return _Drain(seconds, statements, rss)
