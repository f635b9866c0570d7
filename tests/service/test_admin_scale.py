"""How the admin's task list behaves with a long queue: fill it, time the pages over HTTP.

    python -m tests.service.test_admin_scale --db sqlite:////tmp/admin100k.db --tasks 100000
    python -m tests.service.test_admin_scale --tasks 100000 \
        --db postgresql://postgres@127.0.0.1/admin100k

Prints the median (and min/max) of several runs per page; docs/admin.md has the figures. The
test below runs the same code on a small queue (correctness only, never timings).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import httpx
import sqlalchemy as sa

from syncbus import IntegrationBus, create_app
from syncbus.store.tables import task_table
from tests.admin import TOKEN, item, make_admin_bus, row_ids, sign_in
from tests.http_server import running

FAILED_EVERY = 1000


def populate(bus: IntegrationBus, tasks: int, batch: int = 1000) -> None:
    """Queue ``tasks`` Shop tasks through the bus (batches of ``batch``, one transaction
    each); every ``FAILED_EVERY``-th is marked as failed (SkipOnError with an error)."""
    for start in range(0, tasks, batch):
        names = [f"item {i:06}" for i in range(start, min(tasks, start + batch))]
        bus.log_tasks("Shop", [item(n) for n in names])
    t = task_table
    with bus.engine.begin() as conn:
        conn.execute(
            t.update()
            .where(t.c.task_id % FAILED_EVERY == 0)
            .values(
                process_type="SkipOnError",
                error_message="Cannot translate columns ref_id of adm.item: ref_id (adm.ref "
                "'ref7', external id 7, not found). Import the dependent objects first.",
            )
        )


def pages(bus: IntegrationBus) -> dict[str, str]:
    with bus.reader.connect() as conn:
        top = int(conn.execute(sa.select(sa.func.max(task_table.c.task_id))).scalar() or 0)
    deep = int(top * 0.9)
    return {
        "dashboard": "/admin/",
        "dashboard stats fragment (polled)": "/admin/stats",
        "tasks, first page": "/admin/tasks",
        f"tasks, deep page (after={deep})": f"/admin/tasks?after={deep}",
        "tasks, newest first": "/admin/tasks?sort=desc",
        "tasks, failed only": "/admin/tasks?state=failed",
        "tasks, failed + title text": "/admin/tasks?state=failed&text=item+0",
        "tasks, title text (rare)": "/admin/tasks?text=item+09999",
        f"task detail #{deep}": f"/admin/tasks/{deep}",
    }


def measure(client: httpx.Client, paths: dict[str, str], runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for label, path in paths.items():
        assert client.get(path).status_code == 200, path  # warm-up
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            r = client.get(path)
            times.append((time.perf_counter() - start) * 1000)
            assert r.status_code == 200, path
        out[label] = times
    return out


def run(url: str, tasks: int, runs: int, fill: bool = True) -> dict[str, list[float]]:
    bus = make_admin_bus(url)
    try:
        if fill:
            start = time.perf_counter()
            populate(bus, tasks)
            print(f"queued {tasks} tasks in {time.perf_counter() - start:.1f} s")
        app = create_app(bus, api_token=TOKEN, run_dispatcher=False)
        with running(app) as base, httpx.Client(base_url=base, timeout=60) as client:
            sign_in(client)
            return measure(client, pages(bus), runs)
    finally:
        bus.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--no-fill", action="store_true", help="the queue is already filled")
    args = parser.parse_args(argv)
    results = run(args.db, args.tasks, args.runs, fill=not args.no_fill)
    print(f"| page | median ms | min | max |  ({args.runs} runs, {args.db.split(':')[0]})")
    for label, times in results.items():
        print(f"| {label} | {statistics.median(times):.1f} | {min(times):.1f} | {max(times):.1f} |")


def test_the_measurement_runs_on_a_small_queue(db_url: str) -> None:
    results = run(db_url, 2500, runs=1)
    assert len(results) == 9
    bus = make_admin_bus(db_url)
    app: Any = create_app(bus, api_token=TOKEN, run_dispatcher=False)
    with running(app) as base, httpx.Client(base_url=base) as client:
        sign_in(client)
        deep = row_ids(client.get("/admin/tasks?after=2250").text)
        assert deep == list(range(2251, 2301))
        failed = row_ids(client.get("/admin/tasks?state=failed").text)
        assert failed == [1000, 2000]
    bus.close()


if __name__ == "__main__":
    main()
