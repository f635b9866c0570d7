"""The admin-scale profiles: the admin UI's pages over a long queue, timed over HTTP.

The queue of the ``Shop`` connector is filled through ``bus.log_tasks`` in batches of 1,000
(timed: the row ``fill: bus.log_tasks``) with ``tasks`` items titled ``item 000000``,
``item 000001``, ...; every 1,000th task is logged as ``SkipOnError`` and then gets the error
of a failed run (through the store's ``record_task_error``: the error on the task, an entry in
its sync log), so the "failed" filter has something to find among many. None of them is
processed. The dashboard's charts get a history as long as the queue (timed: the row
``fill: history``): as many tasks of the ``Refs`` connector are logged and processed in batches
of 1,000, every 100th a ``DeleteOnError`` task that fails (a dropped record with its error),
so every record lies in the charts' windows (the last hour and the last day).

Then the real app (``create_app``, processing off) is served under uvicorn in a thread, one
client signs in to the admin like a browser, and every page of ``page_paths`` is requested once
to warm up and then ``runs`` times: whole HTTP requests, HTML rendered. The report gives the
median, p95, p99, min and max per page (figures: docs/admin.md). No in-run baseline: these are
times, not ratios. The gates: the queue holds every task logged, every page answered 200.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from rich.progress import Progress

from syncbus.bench.environment import Scratch, durability, machine
from syncbus.bench.gate import BenchGateError, Gates
from syncbus.bench.http import serve_app
from syncbus.bench.prepare import BenchHooks, peak_rss_mb
from syncbus.bench.report import BenchReport, Row, Timing
from syncbus.bench.workload import WORKLOAD_VERSION, Profile
from syncbus.bus import IntegrationBus
from syncbus.connector import BaseIntegrationConnector
from syncbus.content.types import ObjectType
from syncbus.enums import ProcessType, TaskDataType, TaskType
from syncbus.intake import TaskRequest
from syncbus.model import InternalObject, ObjectParams
from syncbus.service.app import create_app
from syncbus.store.logs import record_task_error

PHASE = "admin-scale"
CONNECTOR = "Shop"
FILL_BATCH = 1_000
FAILED_EVERY = 1_000
DROPPED_EVERY = 100  # in the history
FAILED_ERROR = (
    "Cannot translate columns ref_id of adm.item: ref_id (adm.ref 'ref7', external id 7, not "
    "found). Import the dependent objects first."
)
REF_TYPE = ObjectType("adm.ref", "adm_ref", "ref_id", code_name_column="ref_name")
ITEM_TYPE = ObjectType(
    "adm.item",
    "adm_item",
    "item_id",
    code_name_column="item_name",
    foreign_keys={"ref_id": "adm.ref"},
    columns={"item_name": str, "value": int},
)


class ShopConnector(BaseIntegrationConnector):
    """Items of a web shop, which may reference a ``ref`` by external id."""

    connector_name = CONNECTOR
    display_name = "Web shop"

    def prepare_internal_object(
        self, obj: Any, task_type: TaskType, data_type: TaskDataType, site_name: str | None
    ) -> InternalObject:
        if obj["kind"] == "ref":
            return InternalObject("adm.ref", {"ref_name": obj["name"]})
        data: dict[str, Any] = {"item_name": obj["name"], "value": obj.get("value", 0)}
        if "ref" in obj:
            data["ref_id"] = obj["ref"]
        return InternalObject("adm.item", data)

    def get_internal_object_params(self, id: Any, object_type: str) -> ObjectParams:
        return ObjectParams(code_name=f"ref{id}")


class RefsConnector(ShopConnector):
    """A second connector with an empty queue (the dashboard lists every connector) and, once
    ``fill_history`` ran, a long history (the dashboard's charts)."""

    connector_name = "Refs"
    display_name = "Reference data"


def make_bus(url: str) -> IntegrationBus:
    """A bus on ``url`` with the two object types and the Shop and Refs connectors."""
    bus = IntegrationBus(url)
    bus.register_object_type(REF_TYPE)
    bus.register_object_type(ITEM_TYPE)
    bus.create_schema()
    bus.register_connector(ShopConnector)
    bus.register_connector(RefsConnector)
    return bus


def _item(i: int) -> TaskRequest:
    failed = (i + 1) % FAILED_EVERY == 0
    return TaskRequest(
        {"kind": "item", "name": f"item {i:06}", "value": 0},
        process_type=ProcessType.SKIP_ON_ERROR if failed else ProcessType.DEFAULT,
        data_type=TaskDataType.SIMPLE_SNAPSHOT,
    )


def fill(bus: IntegrationBus, tasks: int, advance: Callable[[int], None] | None = None) -> int:
    """Queue ``tasks`` Shop items; every ``FAILED_EVERY``-th (in a fresh database: the task ids
    divisible by it) is a SkipOnError task with an error. Returns the highest task id."""
    failed: list[int] = []
    top = 0
    for start in range(0, tasks, FILL_BATCH):
        numbers = range(start, min(tasks, start + FILL_BATCH))
        outcomes = bus.log_tasks(CONNECTOR, [_item(i) for i in numbers])
        ids = [o.task_id for o in outcomes if o.task_id is not None]
        failed += [t for i, t in zip(numbers, ids, strict=True) if (i + 1) % FAILED_EVERY == 0]
        top = max([top, *ids])
        if advance is not None:
            advance(numbers.stop)
    with bus.engine.begin() as conn:
        for task_id in failed:
            record_task_error(conn, task_id, FAILED_ERROR, set_error_state=False)
    return top


def fill_history(
    bus: IntegrationBus, tasks: int, advance: Callable[[int], None] | None = None
) -> int:
    """Log and process ``tasks`` Refs items, every ``DROPPED_EVERY``-th a ``DeleteOnError``
    task that fails (a missing ref): a record each. Returns how many were applied."""
    applied = 0
    for start in range(0, tasks, FILL_BATCH):
        numbers = range(start, min(tasks, start + FILL_BATCH))
        bus.log_tasks("Refs", [_history_item(i) for i in numbers])
        applied += bus.process_tasks("Refs")["Refs"].applied
        if advance is not None:
            advance(numbers.stop)
    return applied


def _history_item(i: int) -> TaskRequest:
    obj: dict[str, Any] = {"kind": "item", "name": f"done {i:06}", "value": 0}
    if (i + 1) % DROPPED_EVERY == 0:
        obj["ref"] = 7  # no ref 7 exists: the task fails and is dropped
        return TaskRequest(obj, process_type=ProcessType.DELETE_ON_ERROR)
    return TaskRequest(obj, data_type=TaskDataType.SIMPLE_SNAPSHOT)


def page_paths(top: int) -> dict[str, str]:
    """The pages measured, by label; ``top`` is the highest task id in the queue."""
    deep = int(top * 0.9)
    return {
        "dashboard": "/admin/",
        "dashboard stats fragment (polled)": "/admin/stats",
        "dashboard, charts of the last day": "/admin/?span=day",
        "tasks, first page": "/admin/tasks",
        f"tasks, deep page (after={deep})": f"/admin/tasks?after={deep}",
        "tasks, newest first": "/admin/tasks?sort=desc",
        "tasks, failed only": "/admin/tasks?state=failed",
        "tasks, failed + title text": "/admin/tasks?state=failed&text=item+0",
        "tasks, title text (rare)": "/admin/tasks?text=item+09999",
        f"task detail #{deep}": f"/admin/tasks/{deep}",
    }


@contextmanager
def admin_client(bus: IntegrationBus) -> Iterator[httpx.Client]:
    """The app on ``bus`` (processing off) served in a thread, and a client signed in to its
    admin UI (the session cookie, as a browser holds it)."""
    token = secrets.token_urlsafe(24)
    app = create_app(bus, token, run_dispatcher=False)
    with serve_app(app) as client:
        form = {"token": token, "name": "bench", "next": "/admin/"}
        response = client.post("/admin/signin", data=form)
        if response.status_code >= 400 or not client.cookies:
            raise RuntimeError(f"cannot sign in to the admin: HTTP {response.status_code}")
        yield client


def time_pages(client: httpx.Client, paths: dict[str, str], runs: int) -> dict[str, list[float]]:
    """Per page: one warm-up request, then ``runs`` timed ones (ms). An answer other than 200
    raises :class:`BenchGateError`."""
    out: dict[str, list[float]] = {}
    for label, path in paths.items():
        _get(client, path)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            _get(client, path)
            times.append((time.perf_counter() - start) * 1000)
        out[label] = times
    return out


def _get(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    if response.status_code != 200:
        detail = f"GET {path}: HTTP {response.status_code} {response.text[:300]}"
        raise BenchGateError("pages", PHASE, detail)


def run_admin_scale(
    profile: Profile, scratch: Scratch, progress: Progress, batch_size: int, hooks: BenchHooks
) -> BenchReport:
    n = profile.tasks
    bus = make_bus(scratch.url)
    gates = Gates(bus.registry, hooks.before_gate)
    report = BenchReport(
        profile.name, scratch.backend, WORKLOAD_VERSION, batch_size, scratch.name, {}, {}
    )
    report.gates = gates.passed
    try:
        report.machine, report.durability = machine(bus.engine), durability(bus.engine)
        bar = progress.add_task(f"[{scratch.backend}] fill the queue: bus.log_tasks", total=n)
        start = time.perf_counter()
        top = fill(bus, n, lambda done: progress.update(bar, completed=done))
        seconds = time.perf_counter() - start
        queued = bus.queue_size()
        gates.require(queued == n, "log", "fill", f"queued={queued} of {n}")
        report.rows.append(Row(scratch.backend, "fill: bus.log_tasks", n, seconds, peak_rss_mb()))
        bar = progress.add_task(f"[{scratch.backend}] fill the history: log and process", total=n)
        start = time.perf_counter()
        applied = fill_history(bus, n, lambda done: progress.update(bar, completed=done))
        seconds = time.perf_counter() - start
        expected = n - n // DROPPED_EVERY
        gates.require(applied == expected, "log", "history", f"applied={applied} of {expected}")
        report.rows.append(Row(scratch.backend, "fill: history", n, seconds, peak_rss_mb()))
        paths = page_paths(top)
        bar = progress.add_task(f"[{scratch.backend}] admin pages", total=len(paths))
        with admin_client(bus) as client, hooks.wrap(PHASE):
            results = time_pages(client, paths, profile.runs)
        progress.update(bar, completed=len(paths))
        gates.require(
            len(results) == len(paths), "pages", PHASE, f"{len(paths)} pages answered 200"
        )
    finally:
        bus.close()
    report.timings = [Timing(label, times) for label, times in results.items()]
    slowest = max(report.timings, key=lambda t: t.median_ms)
    median = slowest.to_dict()["median_ms"]  # as the JSON has it
    report.extra_summary["admin-slowest-page-median-ms"] = f"{median:.1f}"
    return report
