"""syncbus bench: throughput of the bus against raw SQL floors and peer job queues, the
latency from a POST to ``syncbus serve`` until applied, the admin pages over a long queue, what
coalescing gains on bursty traffic, and a first load of new objects and pages.

``run_bench(profile, db_url, json_path, console)`` runs one profile on one backend and returns a
:class:`BenchReport`; how to run it, what it measures and the figures: ``docs/performance.md``.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from syncbus.bench.adminscale import run_admin_scale
from syncbus.bench.bursty import run_bursty
from syncbus.bench.drain import run_drain
from syncbus.bench.environment import Scratch, open_scratch
from syncbus.bench.gate import BenchGateError
from syncbus.bench.lanes import run_lanes, sqlite_refusal
from syncbus.bench.latency import run_latency
from syncbus.bench.load import run_load
from syncbus.bench.prepare import BenchHooks
from syncbus.bench.report import BenchReport, Row, draw_chart
from syncbus.bench.runner import BenchRun
from syncbus.bench.workload import PROFILES, WORKLOAD_VERSION, Profile, Workload
from syncbus.errors import ConfigurationError
from syncbus.store.db import resolve_url

__all__ = [
    "PROFILES",
    "WORKLOAD_VERSION",
    "BenchGateError",
    "BenchHooks",
    "BenchReport",
    "Profile",
    "Row",
    "Workload",
    "run_bench",
]

DEFAULT_BATCH_SIZE = 200


def _run_throughput(
    prof: Profile, scratch: Scratch, progress: Progress, batch_size: int, hooks: BenchHooks
) -> BenchReport:
    return BenchRun(prof, scratch, progress, batch_size, hooks).run()


# What runs a profile, by its kind (``Profile.kind``).
_RUNNERS = {
    "throughput": _run_throughput,
    "drain": run_drain,
    "latency": run_latency,
    "admin-scale": run_admin_scale,
    "lanes": run_lanes,
    "bursty": run_bursty,
    "load": run_load,
}


def _is_postgresql(db_url: str | None) -> bool:
    return db_url is not None and resolve_url(db_url).get_backend_name() == "postgresql"


def run_bench(
    profile: str,
    db_url: str | None,
    json_path: str | None,
    console: Console,
    chart_path: str | None = None,
    *,
    hooks: BenchHooks | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> BenchReport:
    """Run one bench profile on one database and print its table; the LAST line printed is
    the one-line summary of the headline ratios.

    ``db_url`` None means a fresh temporary SQLite file; a PostgreSQL URL names the server on
    which a scratch database is created (and dropped afterwards). A failed correctness gate
    raises :class:`BenchGateError` and nothing is reported. The chart goes to ``chart_path``,
    else next to the JSON file (``.png``), when matplotlib is installed (throughput and drain
    profiles only).
    """
    prof = PROFILES.get(profile)
    if prof is None:
        raise ConfigurationError(
            f"unknown bench profile {profile!r}; one of: {', '.join(PROFILES)}"
        )
    hooks = hooks or BenchHooks()
    if prof.kind == "lanes" and not _is_postgresql(db_url):
        raise ConfigurationError(sqlite_refusal(prof.name))
    scratch = open_scratch(db_url)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:
            report = _RUNNERS[prof.kind](prof, scratch, progress, batch_size, hooks)
    finally:
        scratch.drop()
    chart = chart_path or (str(Path(json_path).with_suffix(".png")) if json_path else None)
    # A chart of tasks/s: the profiles that measure times (latency, admin-scale) have none.
    if chart is not None and not report.timings and draw_chart([report.to_dict()], chart):
        report.chart_path = chart
    if json_path is not None:
        report.write_json(json_path)
    console.print(report.markdown(), markup=False, highlight=False, soft_wrap=True)
    if report.json_path:
        console.print(f"JSON: {report.json_path}", markup=False, highlight=False, soft_wrap=True)
    if report.chart_path:
        console.print(f"chart: {report.chart_path}", markup=False, highlight=False, soft_wrap=True)
    console.print(report.summary_line(), markup=False, highlight=False, soft_wrap=True)
    return report
