"""The admin UI in a real headless Chromium (Playwright), against the real app under uvicorn:
sign in, find a failed task, fix its cause through the API, synchronize it, watch the queue
drain; delete-all with confirmation; filters, selection and in-place row actions; phone width."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from syncbus import IntegrationBus, ProcessType, create_app
from tests.admin import TOKEN, log_items, make_failed_task
from tests.admin import admin_bus as admin_bus  # a fixture
from tests.chromium import LAPTOP, PHONE, browser, needs_chromium, sign_in
from tests.helpers import wait_for
from tests.http_server import running

pytestmark = [needs_chromium, pytest.mark.browser]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser() as b:
        yield b


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport=LAPTOP)
    yield context.new_page()
    context.close()


def test_fix_a_failed_task_and_watch_the_queue_drain(admin_bus: IntegrationBus, page: Any) -> None:
    from playwright.sync_api import expect

    [failing] = log_items(admin_bus, "Shop", ["Blue chair"], ref=1)
    log_items(admin_bus, "Shop", ["Red table", "Green lamp", "Oak shelf"])
    app = create_app(admin_bus, api_token=TOKEN, scheduler_interval=None)
    with running(app) as url:
        wait_for(lambda: getattr(admin_bus.get_task(failing), "process_type", None) == "Error")
        page.goto(url + "/admin/")
        expect(page).to_have_url(re.compile(r"/admin/signin\?next="))
        page.get_by_label("API token").fill("not the token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("Wrong token.")
        sign_in(page, url, TOKEN)

        # The dashboard shows the failure and why the connector is blocked.
        expect(page.get_by_test_id("failed-Shop")).to_have_text("1")
        expect(page.get_by_test_id("queued-Shop")).to_have_text("4")
        expect(page.locator(".blockers")).to_contain_text("Cannot translate columns")
        page.get_by_test_id("failed-Shop").click()

        # The list, filtered to the failed task, and its detail.
        expect(page.locator("tbody tr")).to_have_count(1)
        expect(page.locator(f"#task-{failing}")).to_contain_text("Cannot translate columns")
        page.locator(f"#task-{failing} td.title a").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text(f"Task #{failing}")
        expect(page.locator("pre.json")).to_contain_text('"item_name": "Blue chair"')
        expect(page.locator("table.records")).to_contain_text("ref1")
        expect(page.locator("table.log tbody tr")).to_have_count(1)

        # Fix the cause through the HTTP API: the referenced object arrives by another feed.
        r = httpx.post(
            url + "/api/connectors/Refs/tasks",
            json={"task_type": "CreateObject", "object": {"kind": "ref", "name": "ref1"}},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code == 201
        wait_for(lambda: admin_bus.get_object("adm.ref", "ref1") is not None)

        page.get_by_role("button", name="Synchronize now").click()
        expect(page.get_by_role("status")).to_contain_text("was applied")
        assert admin_bus.get_task(failing) is None

        # Process the rest now; the dashboard refreshes itself until the queue is empty.
        page.get_by_role("link", name="Dashboard").click()
        page.get_by_role("button", name="Process now: Shop").click()
        expect(page.get_by_test_id("queued-Shop")).to_have_text("0", timeout=20_000)
        expect(page.get_by_test_id("failed-Shop")).to_have_text("0")
        assert admin_bus.queue_size() == 0
        assert admin_bus.get_object("adm.item", "Oak shelf") is not None


def test_delete_all_asks_first_and_is_logged(admin_bus: IntegrationBus, page: Any) -> None:
    from playwright.sync_api import expect

    log_items(admin_bus, "Shop", [f"Old stock {i}" for i in range(5)])
    [kept] = log_items(admin_bus, "Refs", ["Old stock reference"])
    app = create_app(admin_bus, api_token=TOKEN, run_dispatcher=False)
    with running(app) as url:
        sign_in(page, url, TOKEN)
        page.get_by_role("link", name="Tasks").click()
        page.get_by_label("Connector").select_option("Shop")
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_test_id("match-count")).to_contain_text("5 tasks match")
        page.get_by_role("button", name="Delete all 5…").click()

        expect(page.get_by_role("heading", level=1)).to_have_text("Delete 5 tasks?")
        assert admin_bus.queue_size() == 6  # nothing happened yet
        page.get_by_role("button", name="Yes, delete 5 tasks").click()

        expect(page.get_by_test_id("job-state")).to_have_text("finished", timeout=15_000)
        expect(page.get_by_test_id("job-count")).to_have_text("5 of 5")
        expect(page.locator(".joblog")).to_contain_text("Deleting 'Create adm.item 'Old stock 4''")
        assert [t.task_id for t in admin_bus.list_tasks()] == [kept]
        page.get_by_role("link", name="Event log").click()
        row = page.locator("table.events tbody tr").first
        expect(row).to_contain_text("DELETEALLTASKS")
        expect(row).to_contain_text("by Olivia Operator from 127.0.0.1")


def test_filters_selection_and_row_actions(admin_bus: IntegrationBus, page: Any) -> None:
    from playwright.sync_api import expect

    failed = make_failed_task(admin_bus, "Broken bench")
    shop = log_items(admin_bus, "Shop", ["Walnut desk", "Pine desk", "Steel stool"])
    refs = log_items(admin_bus, "Refs", ["Desk catalogue"])
    app = create_app(admin_bus, api_token=TOKEN, run_dispatcher=False)
    with running(app) as url:
        sign_in(page, url, TOKEN)
        page.goto(url + "/admin/tasks")
        rows = page.locator("table.tasks tbody tr")
        expect(rows).to_have_count(5)

        def apply(**choices: str) -> None:
            page.goto(url + "/admin/tasks")
            for label, value in choices.items():
                field = page.get_by_label(label)
                if label == "Title contains":
                    field.fill(value)
                else:
                    field.select_option(value)
            page.get_by_role("button", name="Filter").click()

        apply(State="failed")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_id(f"task-{failed}")
        apply(State="blocked")
        expect(rows).to_have_count(1)
        apply(State="pending", Connector="Shop")
        expect(rows).to_have_count(3)
        apply(**{"Title contains": "desk"})
        expect(rows).to_have_count(3)  # two Shop desks and the Refs catalogue
        apply(**{"Title contains": "desk", "Connector": "Refs"})
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_id(f"task-{refs[0]}")
        apply(**{"Object or page type": "adm.item", "Order": "desc"})
        expect(rows.first).to_have_id(f"task-{refs[0]}")  # newest first
        expect(rows).to_have_count(5)

        # Synchronize one row in place (htmx): the page stays, the row says what happened.
        page.goto(url + "/admin/tasks")
        page.get_by_role("button", name=f"Synchronize task {shop[0]}").click()
        expect(page.locator(f"#task-{shop[0]}")).to_contain_text("was applied")
        assert page.url == url + "/admin/tasks"
        page.on("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name=f"Delete task {shop[1]}").click()
        expect(page.locator(f"#task-{shop[1]}")).to_contain_text("was deleted")

        # Select all on the page, then synchronize the selection in the background.
        page.goto(url + "/admin/tasks")
        page.get_by_label("Select all tasks on this page").check()
        expect(page.get_by_label(f"Select task {failed}")).to_be_checked()
        page.get_by_role("button", name="Synchronize selected").click()
        expect(page.get_by_test_id("job-state")).to_have_text("finished", timeout=15_000)
        expect(page.locator(".joblog")).to_contain_text("'Create adm.item 'Broken bench'' failed")
        assert [t.task_id for t in admin_bus.list_tasks()] == [failed]
        assert admin_bus.get_task(failed).process_type is ProcessType.ERROR  # type: ignore[union-attr]


def test_phone_width_scrolls_the_table_not_the_page(
    admin_bus: IntegrationBus, chromium: Any
) -> None:
    make_failed_task(admin_bus, "A task with a rather long title that has to wrap somewhere")
    app = create_app(admin_bus, api_token=TOKEN, run_dispatcher=False)
    context = chromium.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        with running(app) as url:
            sign_in(page, url, TOKEN)
            for path in ("/admin/", "/admin/tasks", "/admin/events"):
                page.goto(url + path)
                width = page.evaluate("() => document.documentElement.scrollWidth")
                assert width <= PHONE["width"], (path, width)
            wrap = page.locator(".table-wrap").first
            page.goto(url + "/admin/tasks")
            assert wrap.evaluate("e => e.scrollWidth > e.clientWidth")
            page.get_by_label("State").select_option("failed")  # labelled controls
    finally:
        context.close()
