"""Lanes in the admin UI, in a real headless Chromium: an ENTITY connector with one halted lane
and one waiting task. The dashboard names the lane and what the task waits for; their links
lead to the task list filtered by lane and to waiting tasks; the filter form does the same.

Screenshots go to ``$SYNCBUS_SCREENSHOTS`` when it is set (``docs/images`` for the docs:
``SYNCBUS_SCREENSHOTS=docs/images pytest tests/browser/test_lanes_browser.py -k sqlite``),
else to the test's temporary directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from syncbus import IntegrationBus, create_app
from tests.admin import ERIN, TOKEN, make_lane_scene
from tests.chromium import assert_png, needs_chromium, sign_in
from tests.chromium import page as page  # a fixture
from tests.chromium import shots as shots  # a fixture
from tests.http_server import running

pytestmark = [needs_chromium, pytest.mark.browser]


def test_halted_lane_and_waiting_task_on_dashboard_and_task_list(
    bus: IntegrationBus, page: Any, shots: Path
) -> None:
    from playwright.sync_api import expect

    scene = make_lane_scene(bus)
    app = create_app(bus, api_token=TOKEN, run_dispatcher=False)
    with running(app) as url:
        sign_in(page, url, TOKEN)

        # The dashboard: the ENTITY connector's halted lane and waiting task, by name.
        lanes = page.get_by_test_id("lanes-Lanes")
        expect(lanes).to_contain_text(
            "1 lane halted by an Error task; 1 task waiting for an entity; its other lanes go on."
        )
        halted = lanes.get_by_test_id("halted-lane")
        expect(halted).to_have_count(1)
        expect(halted).to_contain_text(f"lane {ERIN} is halted by task #{scene.error}")
        expect(halted).to_contain_text("(1 behind it)")
        waited = lanes.get_by_test_id("waited-for")
        expect(waited).to_have_text(
            re.compile(r"1 task waits for cms\.user 'alice'\s+\(not found when last tried; since")
        )
        # The CONNECTOR connector's explanation is the one it always had.
        expect(page.locator(".blockers")).to_contain_text(
            f"Plain is blocked by task #{scene.plain_error}"
        )
        page.screenshot(path=str(shots / "lanes-dashboard.png"), full_page=True)
        assert_png(shots / "lanes-dashboard.png")

        # The halted lane's link: the task list filtered by that lane.
        halted.get_by_role("link", name=ERIN).click()
        expect(page).to_have_url(
            re.compile(r"/admin/tasks\?connector=Lanes&lane=cms\.user%2Ferin$")
        )
        rows = page.locator("table.tasks tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_have_id(f"task-{scene.error}")
        expect(rows.nth(0)).to_contain_text("failed, halts its lane")
        expect(rows.nth(1)).to_have_id(f"task-{scene.behind}")
        expect(rows.nth(1).locator(".badge")).to_have_text(f"halted by #{scene.error}")
        expect(page.get_by_label("Lane", exact=True)).to_have_value(ERIN)
        expect(page.get_by_test_id("match-count")).to_contain_text("2 tasks match")

        # The waiting tasks' link: the list filtered to waiting tasks.
        page.get_by_role("link", name="Dashboard").click()
        page.get_by_test_id("waiting-link-Lanes").click()
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_id(f"task-{scene.waiting}")
        expect(page.get_by_test_id(f"waiting-{scene.waiting}")).to_contain_text(
            "waiting for cms.user 'alice' for"
        )
        expect(page.get_by_label("Waiting only")).to_be_checked()

        # The filter form: a lane typed in, then waiting only on top of it.
        page.goto(url + "/admin/tasks")
        expect(rows).to_have_count(5)
        page.get_by_label("Lane", exact=True).fill(ERIN)
        page.get_by_role("button", name="Filter").click()
        expect(rows).to_have_count(2)
        page.get_by_label("Waiting only").check()
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("table.tasks tbody")).to_contain_text("No queued task matches.")

        # The whole ENTITY queue: lanes, the waiting task and the halted lane, as shot for docs.
        page.goto(url + "/admin/tasks?connector=Lanes")
        expect(rows).to_have_count(3)
        expect(rows.first.locator(".badge")).to_have_text("waiting")
        page.screenshot(path=str(shots / "lanes-tasks.png"), full_page=True)
        assert_png(shots / "lanes-tasks.png")

        # A lane link in the list leads to that lane; the task page says what it waits for.
        page.get_by_test_id(f"lane-{scene.behind}").click()
        expect(rows).to_have_count(2)
        page.goto(f"{url}/admin/tasks/{scene.waiting}")
        expect(page.get_by_test_id("task-waiting")).to_contain_text("Waiting for cms.user 'alice'")
