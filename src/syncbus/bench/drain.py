"""The drain-1m profile: peak RSS of draining a long queue, in a fresh subprocess.

The parent fills the queue through the bus's batch logging API (not timed), then starts
``python -m syncbus.bench.drainchild URL BATCH_SIZE``, which only runs ``bus.process_tasks()`` until
the queue is empty and prints its figures (seconds, applied, its own peak RSS: ``VmHWM``) as JSON.
The parent then checks the gates against the reference model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from rich.progress import Progress

from syncbus.bench.environment import Scratch, durability, machine
from syncbus.bench.gate import Gates
from syncbus.bench.prepare import BenchHooks, chunks, prepare_bus, request
from syncbus.bench.reference import ReferenceModel
from syncbus.bench.report import BenchReport, Row
from syncbus.bench.workload import CONNECTOR_NAME, WORKLOAD_VERSION, Profile, Workload
from syncbus.bus import IntegrationBus
from syncbus.errors import SyncBusError


def run_drain(
    profile: Profile, scratch: Scratch, progress: Progress, batch_size: int, hooks: BenchHooks
) -> BenchReport:
    workload = Workload(profile)
    bus = IntegrationBus(scratch.url, batch_size=batch_size)
    gates = Gates(bus.registry, hooks.before_gate)
    report = BenchReport(
        profile.name, scratch.backend, WORKLOAD_VERSION, batch_size, scratch.name, {}, {}
    )
    report.gates = gates.passed
    n = profile.tasks
    try:
        prepare_bus(bus, workload, gates)
        report.machine, report.durability = machine(bus.engine), durability(bus.engine)
        bar = progress.add_task(f"[{scratch.backend}] fill the queue: bus.log_tasks", total=n)
        count = 0
        for chunk in chunks(workload.tasks(), 1_000):
            outcomes = bus.log_tasks(CONNECTOR_NAME, [request(t) for t in chunk])
            count += sum(1 for o in outcomes if o.task_id is not None)
            progress.update(bar, completed=count)
        queued = bus.queue_size()
        gates.require(count == n == queued, "log", "fill", f"logged={count} queued={queued}")
        expected = ReferenceModel.of(workload)
        bar = progress.add_task(f"[{scratch.backend}] drain in a fresh subprocess", total=n)
        with hooks.wrap("drain"):
            child = _drain_in_subprocess(scratch.url, batch_size, progress, bar)
        gates.counts(
            "drain",
            logged=n,
            applied=child["applied"],
            failed=child["failed"],
            queued=bus.queue_size(),
        )
        gates.content("drain", bus.engine, expected)
    finally:
        bus.close()
    row = Row(scratch.backend, "process (fresh subprocess)", n, child["seconds"], 0.0)
    row.peak_rss_mb = child["maxrss_kb"] / 1024
    row.note = f"RSS when the drain started: {child['rss_start_kb'] / 1024:.0f} MB"
    samples = child.get("rss_samples_kb") or []
    if samples:
        steps = ", ".join(f"{kb / 1024:.0f}" for _, kb in samples)
        row.note += f"; after each tenth of the queue: {steps} MB"
    report.rows.append(row)
    report.headline = {}
    report.extra_summary["drain-peak-rss-mb"] = f"{row.peak_rss_mb:.0f}"
    return report


def _drain_in_subprocess(url: str, batch_size: int, progress: Progress, bar: Any) -> Any:
    cmd = [sys.executable, "-m", "syncbus.bench.drainchild", url, str(batch_size)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        errors: list[str] = []
        for line in proc.stderr:
            if line.startswith("applied "):
                progress.update(bar, completed=int(line.split()[1]))
            else:
                errors.append(line)
        out = proc.stdout.read()
        code = proc.wait()
    if code != 0:
        raise SyncBusError(f"the drain subprocess failed ({code}): {''.join(errors)[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])
