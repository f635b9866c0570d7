"""A task's lineage, edit and replay, and an object's history in a real headless Chromium: a
failed task's external object is edited in the browser (bad JSON is refused before it is sent;
an object the connector refuses comes back with its error; nothing changes either way), then
saved and synchronized; the applied task's page shows the chain; the object history search
lists every task that wrote the object, newest first.

Screenshots go to ``$SYNCBUS_SCREENSHOTS`` when it is set (``docs/images`` for the docs:
``SYNCBUS_SCREENSHOTS=docs/images pytest tests/browser/test_lineage_browser.py -k sqlite``),
else to the test's temporary directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from syncbus import IntegrationBus, TaskDataType, TaskType, create_app
from syncbus.intake import TaskRequest
from tests.admin import TOKEN
from tests.admin import admin_bus as admin_bus  # a fixture
from tests.chromium import assert_png, needs_chromium, sign_in
from tests.chromium import page as page  # a fixture
from tests.chromium import shots as shots  # a fixture
from tests.http_server import running

pytestmark = [needs_chromium, pytest.mark.browser]

CHAIR = "Blue chair"


def chair(value: int, task_type: TaskType, ref: int | None = None) -> TaskRequest:
    obj: dict[str, Any] = {"kind": "item", "name": CHAIR, "value": value}
    if ref is not None:
        obj["ref"] = ref
    return TaskRequest(obj, task_type=task_type, data_type=TaskDataType.SIMPLE_SNAPSHOT)


def make_story(bus: IntegrationBus) -> int:
    """The chair is created and updated by the Refs feed, which also brings ref 2; the shop's
    update references ref 1, which does not exist, so it fails and blocks the shop's queue.
    Its task id."""
    ref2 = TaskRequest({"kind": "ref", "name": "ref2"})
    for request in (chair(1, TaskType.CREATE_OBJECT), chair(2, TaskType.UPDATE_OBJECT), ref2):
        bus.log_tasks("Refs", [request])
        assert bus.process_tasks("Refs")["Refs"].applied == 1
    [outcome] = bus.log_tasks("Shop", [chair(4, TaskType.UPDATE_OBJECT, ref=1)])
    assert bus.process_tasks("Shop")["Shop"].failed == 1
    assert outcome.task_id is not None
    return outcome.task_id


def test_edit_and_replay_a_failed_task_then_find_the_object_history(
    admin_bus: IntegrationBus, page: Any, shots: Path
) -> None:
    from playwright.sync_api import expect

    failing = make_story(admin_bus)
    logged = admin_bus.task_history(failing)
    app = create_app(admin_bus, api_token=TOKEN, run_dispatcher=False)
    with running(app) as url:
        sign_in(page, url, TOKEN)
        page.goto(f"{url}/admin/tasks/{failing}")
        expect(page.get_by_test_id("task-state")).to_have_text("failed")
        expect(page.get_by_test_id("step-translations")).to_contain_text("not resolved yet")
        editor = page.get_by_label("Edit the external object (JSON)")
        error = page.get_by_test_id("editor-error")
        expect(editor).to_have_value(re.compile(r'"ref": 1'))
        expect(error).to_be_hidden()

        # Not JSON: the page says so as it is typed, and Save sends nothing.
        editor.fill('{"kind": "item", "name": "Blue chair",')
        expect(error).to_contain_text("Not valid JSON")
        expect(editor).to_have_attribute("aria-invalid", "true")
        page.get_by_role("button", name="Save", exact=True).click()
        expect(editor).to_be_focused()
        assert page.url == f"{url}/admin/tasks/{failing}"
        assert admin_bus.task_history(failing) == logged

        # JSON the connector refuses: the server's error, next to the editor; nothing changed.
        bad = '{"kind": "item", "name": "Blue chair", "value": "four"}'
        editor.fill(bad)
        expect(error).to_be_hidden()
        page.get_by_role("button", name="Save and synchronize").click()
        expect(error).to_contain_text("column 'value' of adm.item: the column holds int values")
        expect(editor).to_have_value(bad)
        assert admin_bus.task_history(failing) == logged

        # The fix: ref 2, which exists, instead of ref 1; saved and synchronized, it is applied.
        editor.fill('{"kind": "item", "name": "Blue chair", "value": 4, "ref": 2}')
        page.get_by_role("button", name="Save and synchronize").click()
        expect(page.get_by_role("status")).to_contain_text(
            f"Task {failing}'s object was replaced and the task was applied."
        )
        expect(page.get_by_test_id("task-state")).to_have_text("applied")
        assert admin_bus.get_object("adm.item", CHAIR)["value"] == 4  # type: ignore[index]
        chain = page.get_by_test_id("lineage")
        expect(chain.locator("li.step")).to_have_count(5)
        expect(page.get_by_test_id("external-json")).to_contain_text('"ref": 2')
        expect(page.get_by_test_id("internal-json")).to_contain_text('"ref_id": 2')
        ref_id = admin_bus.get_object("adm.ref", "ref2")["ref_id"]  # type: ignore[index]
        translation = page.locator("table.records tbody tr")
        expect(translation).to_have_count(1)
        expect(translation).to_contain_text("adm.ref 'ref2'")
        expect(translation.get_by_test_id("resolved")).to_have_text(f"internal id {ref_id}")
        changes = page.locator("table.changes tbody tr")
        expect(changes).to_have_count(2)
        expect(changes.nth(0)).to_have_text(re.compile(r"value\s*2\s*4"))
        expect(changes.nth(1)).to_have_text(re.compile(rf"ref_id\s*\u2013\s*{ref_id}"))
        expect(page.locator("table.log tbody tr")).to_have_count(1)
        expect(page.locator("table.log")).to_contain_text("Cannot translate columns ref_id")
        page.screenshot(path=str(shots / "lineage.png"), full_page=True)
        assert_png(shots / "lineage.png")

        # The object's history: from the task page's link, and from the search form.
        page.get_by_test_id("object-history-link").click()
        rows = page.locator("table.history tbody tr")
        expect(rows).to_have_count(3)
        page.get_by_role("link", name="Object history").click()
        expect(rows).to_have_count(0)
        page.get_by_label("Object type").select_option("adm.item")
        page.get_by_label("Code name or GUID").fill(CHAIR)
        page.get_by_role("button", name="Find").click()
        expect(page.get_by_test_id("history-count")).to_contain_text("3 tasks wrote adm.item")
        expect(rows).to_have_count(3)
        expect(rows.nth(0)).to_have_id(f"record-{failing}")  # newest first
        expect(rows.nth(0)).to_contain_text("value: 2 → 4")
        expect(rows.nth(1)).to_contain_text("value: 1 → 2")
        expect(rows.nth(2)).to_contain_text("Refs")
        page.screenshot(path=str(shots / "object-history.png"), full_page=True)
        assert_png(shots / "object-history.png")

        rows.nth(1).get_by_role("link").first.click()
        expect(page.get_by_test_id("task-state")).to_have_text("applied")
        expect(page.get_by_test_id("external-json")).to_contain_text('"value": 2')
