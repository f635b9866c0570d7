"""End to end: log and process at once, and measure each task's latency from log to applied.

One thread logs the tasks through ``process_external_task`` at a fixed arrival rate (below the
capacity measured earlier in the same run) and wakes the processor; the processor loops
``bus.process_tasks(on_progress=...)``. After every batch commits, the progress callback notes
the time and the highest task id applied so far (told by the bus's ``task_applied`` hook,
which the bus calls once the batch has committed and before the callback). Tasks are applied
strictly in id order and none fails (a gate), so every task whose id is at most that one was
applied by then: its latency is the first such moment minus the moment its log call
started. (The callback used to ask the database for the smallest id still queued: a query on
a connection of its own after every batch, which the next batch of the same thread waited
for, so the harness added its own time to every latency it measured.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from syncbus.bench.workload import CONNECTOR_NAME, BenchTask
from syncbus.bus import IntegrationBus
from syncbus.model import ProcessResult

Progress = Callable[[int], None]


@dataclass
class E2ERun:
    tasks: int
    rate_target: float
    rate_achieved: float
    seconds: float
    applied: int
    failed: int
    latencies: list[float] = field(default_factory=list)  # seconds, one per task, task order
    lag_max: float = 0.0  # how far the logger fell behind its schedule, at worst (seconds)


@dataclass
class _Shared:
    logs: list[tuple[int, float, float]] = field(default_factory=list)  # (id, submit, committed)
    marks: list[tuple[float, int]] = field(default_factory=list)  # (time, last applied id)
    wake: threading.Event = field(default_factory=threading.Event)
    logged_all: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    lag_max: float = 0.0


def run_e2e(bus: IntegrationBus, tasks: list[BenchTask], rate: float, progress: Progress) -> E2ERun:
    shared = _Shared()
    logger = threading.Thread(target=_log, args=(bus, tasks, rate, shared), daemon=True)
    first_submit = time.perf_counter()
    logger.start()
    applied, failed = _process(bus, len(tasks), shared, progress, deadline=_deadline(tasks, rate))
    logger.join()
    if shared.error is not None:
        raise shared.error
    latencies = _latencies(shared.logs, shared.marks)
    last = max((s + lat for (_, s, _), lat in zip(shared.logs, latencies, strict=False)), default=0)
    span = shared.logs[-1][1] - shared.logs[0][1] if len(shared.logs) > 1 else 0.0
    return E2ERun(
        tasks=len(shared.logs),
        rate_target=rate,
        rate_achieved=(len(shared.logs) - 1) / span if span > 0 else 0.0,
        seconds=max(last - first_submit, 0.0),
        applied=applied,
        failed=failed,
        latencies=latencies,
        lag_max=shared.lag_max,
    )


def _deadline(tasks: list[BenchTask], rate: float) -> float:
    return time.perf_counter() + 3 * len(tasks) / rate + 120


def _log(bus: IntegrationBus, tasks: list[BenchTask], rate: float, shared: _Shared) -> None:
    try:
        start = time.perf_counter()
        for i, task in enumerate(tasks):
            due = start + i / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            submit = time.perf_counter()
            shared.lag_max = max(shared.lag_max, submit - due)
            task_id = bus.process_external_task(
                CONNECTOR_NAME,
                task.obj,
                task_type=task.task_type,
                data_type=task.data_type,
                site_name=task.site_name,
            )
            if task_id is None:
                raise RuntimeError(f"the bench connector skipped task {task.seq}")
            shared.logs.append((task_id, submit, time.perf_counter()))
            shared.wake.set()
    except BaseException as exc:
        shared.error = exc
    finally:
        shared.logged_all.set()
        shared.wake.set()


def _process(
    bus: IntegrationBus, n: int, shared: _Shared, progress: Progress, deadline: float
) -> tuple[int, int]:
    applied = failed = 0
    seen = _Applied()

    def mark(result: ProcessResult) -> None:
        shared.marks.append((time.perf_counter(), seen.last))
        progress(applied + result.applied)

    bus.hooks.subscribe(seen)
    try:
        while applied < n and failed == 0:
            if shared.error is not None or time.perf_counter() > deadline:
                break
            shared.wake.wait(0.05)
            shared.wake.clear()
            result = bus.process_tasks(on_progress=mark).get(CONNECTOR_NAME)
            if result is not None:
                applied += result.applied
                failed += result.failed
    finally:
        bus.hooks.unsubscribe(seen)
    return applied, failed


class _Applied:
    """The highest id of a task of the bench connector applied so far (a bus hook)."""

    def __init__(self) -> None:
        self.last = 0

    def task_applied(self, connector_name: str, task_id: int, manual: bool = False) -> None:
        if connector_name == CONNECTOR_NAME and task_id > self.last:
            self.last = task_id


def _latencies(logs: list[tuple[int, float, float]], marks: list[tuple[float, int]]) -> list[float]:
    """Per logged task: the first mark that shows it applied, minus its submit time. (The
    batch that applied it may commit before its log call has returned to the logger thread.)"""
    out: list[float] = []
    j = 0
    for task_id, submit, _committed in logs:
        while j < len(marks):
            if marks[j][1] >= task_id:
                break
            j += 1
        if j == len(marks):
            break  # never seen applied: the counts gate reports it
        out.append(marks[j][0] - submit)
    return out
