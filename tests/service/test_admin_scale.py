"""How the admin's task list and the dashboard's charts behave with a long queue and a long
history: the admin-scale bench profile's code (``syncbus.bench.adminscale``) on a small queue
and history (correctness only, never timings).

The measurement itself is ``syncbus bench --profile admin-scale``; docs/admin.md has the figures.
"""

from __future__ import annotations

import re

from syncbus.bench.adminscale import (
    admin_client,
    fill,
    fill_history,
    make_bus,
    page_paths,
    time_pages,
)
from tests.admin import row_ids


def test_the_measurement_runs_on_a_small_queue(db_url: str) -> None:
    bus = make_bus(db_url)
    try:
        top = fill(bus, 2500)
        assert fill_history(bus, 1000) == 990  # every 100th is dropped on error
        with admin_client(bus) as client:
            results = time_pages(client, page_paths(top), runs=1)
            assert len(results) == 10
            for span in ("hour", "day"):
                html = client.get(f"/admin/?span={span}").text
                assert _totals(html, "Refs") == "990 applied, 10 failed, 0 queued"
                assert _totals(html, "Shop") == "0 applied, 2 failed, 2500 queued"
            deep = row_ids(client.get("/admin/tasks?after=2250").text)
            assert deep == list(range(2251, 2301))
            failed = row_ids(client.get("/admin/tasks?state=failed").text)
            assert failed == [1000, 2000]
    finally:
        bus.close()


def _totals(html: str, connector: str) -> str:
    found = re.search(rf'data-testid="totals-{connector}">([^<]*)<', html)
    assert found, f"no chart of {connector}"
    return found.group(1)
