"""The dashboard's charts in a real headless Chromium: a day of history (``tests.charts_scene``)
drawn per connector; a hover title gives a bucket's exact numbers; *Last day* swaps the charts
in place (htmx) and the URL follows; the polling keeps the span.

The screenshot goes to ``$SYNCBUS_SCREENSHOTS`` when it is set (``docs/images`` for the docs:
``SYNCBUS_SCREENSHOTS=docs/images pytest tests/browser/test_charts_browser.py -k sqlite``),
else to the test's temporary directory."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncbus import IntegrationBus, create_app
from tests.admin import TOKEN
from tests.admin import admin_bus as admin_bus  # a fixture
from tests.charts_scene import make_charts_scene
from tests.chromium import LAPTOP, browser, needs_chromium, sign_in
from tests.chromium import shots as shots  # a fixture
from tests.http_server import running

pytestmark = [needs_chromium, pytest.mark.browser]


@pytest.fixture
def page() -> Iterator[Any]:
    with browser() as b:
        context = b.new_context(viewport={**LAPTOP, "height": 1000})  # type: ignore[attr-defined]
        yield context.new_page()
        context.close()


def test_charts_of_the_last_hour_and_day(admin_bus: IntegrationBus, page: Any, shots: Path) -> None:
    from playwright.sync_api import expect

    make_charts_scene(admin_bus, dt.datetime.now(dt.UTC))
    app = create_app(admin_bus, api_token=TOKEN, run_dispatcher=False)
    with running(app) as url:
        sign_in(page, url, TOKEN)
        charts = page.get_by_test_id("charts")
        expect(charts.get_by_role("heading", name="Activity, last hour")).to_be_visible()
        shop = page.get_by_test_id("chart-Shop")
        expect(shop.get_by_role("img", name="Web shop: activity in the last hour")).to_be_visible()
        expect(page.get_by_test_id("totals-Shop")).to_contain_text("failed, 3 queued")
        # Every bucket has a hover title; the last one is now, with the three tasks queued.
        titles = shop.locator("svg.chart rect.hover title")
        expect(titles).to_have_count(60)
        expect(titles.last).to_contain_text("; 3 queued at")
        box = shop.locator("svg.chart").bounding_box()
        assert box and box["width"] > 400, box
        page.screenshot(path=str(shots / "dashboard-charts.png"), full_page=True)

        page.get_by_test_id("span-day").click()
        expect(charts.get_by_role("heading", name="Activity, last day")).to_be_visible()
        page.wait_for_url(url + "/admin/?span=day")
        expect(shop.locator("svg.chart rect.hover title")).to_have_count(72)
        poll = page.locator("#stats")
        expect(poll).to_have_attribute("hx-get", "/admin/stats?span=day")
        # The next poll (every 5 s) swaps the fragment and keeps the day's charts.
        with page.expect_response(lambda r: "/admin/stats?span=day" in r.url, timeout=8000):
            pass
        expect(page.get_by_test_id("span-day")).to_have_attribute("aria-current", "true")
    data = (shots / "dashboard-charts.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
