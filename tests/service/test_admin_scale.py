"""How the admin's task list behaves with a long queue: the admin-scale bench profile's code
(``syncbus.bench.adminscale``) on a small queue (correctness only, never timings).

The measurement itself is ``syncbus bench --profile admin-scale``; docs/admin.md has the figures.
"""

from __future__ import annotations

from syncbus.bench.adminscale import admin_client, fill, make_bus, page_paths, time_pages
from tests.admin import row_ids


def test_the_measurement_runs_on_a_small_queue(db_url: str) -> None:
    bus = make_bus(db_url)
    try:
        top = fill(bus, 2500)
        with admin_client(bus) as client:
            results = time_pages(client, page_paths(top), runs=1)
            assert len(results) == 9
            deep = row_ids(client.get("/admin/tasks?after=2250").text)
            assert deep == list(range(2251, 2301))
            failed = row_ids(client.get("/admin/tasks?state=failed").text)
            assert failed == [1000, 2000]
    finally:
        bus.close()
