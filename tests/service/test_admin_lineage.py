"""The admin's history views (CONTRACT §10) in process, on SQLite and PostgreSQL: a finished
task's page shows its lineage as one chain; edit and replay of a failed task's external object
(bad edits show their error and change nothing; a good one is saved, or saved and applied);
the object history search. Browser test: tests/browser/test_lineage_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from syncbus import IntegrationBus, ProcessType, TaskDataType, TaskType, create_app
from syncbus.bench.adminscale import ShopConnector
from syncbus.intake import TaskRequest
from tests.admin import (
    TOKEN,
    RecordingDispatcher,
    csrf_of,
    item,
    log_items,
    make_failed_task,
    sign_in,
)
from tests.admin import admin_bus as admin_bus  # a fixture
from tests.http_server import asgi_client

STEPS = ["step-external", "step-internal", "step-translations", "step-changes", "step-errors"]


@pytest.fixture
def app(admin_bus: IntegrationBus) -> FastAPI:
    dispatcher = RecordingDispatcher(admin_bus)
    return create_app(admin_bus, api_token=TOKEN, dispatcher=dispatcher, run_dispatcher=False)


@pytest.fixture
def admin(app: FastAPI) -> Iterator[httpx.Client]:
    with asgi_client(app) as client:
        assert sign_in(client).status_code == 303
        yield client


def step(html: str, name: str) -> str:
    """The HTML of one step of the lineage chain."""
    match = re.search(
        rf'<li class="step" data-testid="{name}">(.*?)</li>\s*(?=<li class="step"|</ol>)',
        html,
        re.S,
    )
    assert match, f"no {name} in the page"
    return match.group(1)


def make_ref(bus: IntegrationBus, name: str = "ref1") -> None:
    """The adm.ref a failed task's ref 1 stands for, created through the Refs connector."""
    bus.log_tasks("Refs", [TaskRequest({"kind": "ref", "name": name})])
    assert bus.process_tasks("Refs")["Refs"].applied == 1


def edit(admin: httpx.Client, task_id: int, text: str, op: str = "save") -> httpx.Response:
    token = csrf_of(admin.get(f"/admin/tasks/{task_id}").text)
    return admin.post(
        f"/admin/tasks/{task_id}/object", data={"csrf_token": token, "object": text, "op": op}
    )


def test_finished_task_page_shows_its_idempotency_key(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    [outcome] = admin_bus.log_tasks(
        "Shop", [item("keyed", value=1, idempotency_key="shop-order-<9>")]
    )
    assert outcome.task_id is not None
    admin_bus.process_tasks("Shop")
    html = admin.get(f"/admin/tasks/{outcome.task_id}").text
    assert 'data-testid="task-state">applied<' in html
    assert 'data-testid="finished-idempotency-key">shop-order-&lt;9&gt;<' in html


def test_finished_task_page_shows_the_lineage_chain(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    task_id = make_failed_task(admin_bus, "Blue <chair>")
    make_ref(admin_bus)
    assert admin_bus.synchronize_task(task_id)
    ref_id = admin_bus.get_object("adm.ref", "ref1")["ref_id"]  # type: ignore[index]
    page = admin.get(f"/admin/tasks/{task_id}")
    assert page.status_code == 200
    html = page.text
    assert 'data-testid="task-state">applied<' in html
    assert 'data-testid="finished-at"' in html and "Synchronize now" not in html
    # It was synchronized out of Error: the type it had then, said as such.
    assert 'Error <span class="hint">(when it left the queue)</span>' in html
    # One chain, in order: external -> internal -> translations -> changes -> errors.
    places = [html.index(f'data-testid="{name}"') for name in STEPS]
    assert places == sorted(places)
    external = step(html, "step-external")
    assert "&#34;name&#34;: &#34;Blue &lt;chair&gt;&#34;" in external  # pretty, escaped
    assert "<textarea" not in external  # a finished task cannot be edited
    assert "&#34;item_name&#34;: &#34;Blue &lt;chair&gt;&#34;" in step(html, "step-internal")
    translations = step(html, "step-translations")
    assert "<code>ref_id</code>" in translations and "adm.ref &#39;ref1&#39;" in translations
    assert f"internal id <code>{ref_id}</code>" in translations
    changes = step(html, "step-changes")
    assert re.search(
        r"<code>item_name</code></td><td>.*?</td><td><code>&#34;Blue &lt;chair&gt;&#34;", changes
    )
    assert re.search(rf"<code>ref_id</code></td><td>.*?</td><td><code>{ref_id}</code>", changes)
    errors = step(html, "step-errors")
    assert errors.count("Cannot translate columns ref_id") == 1
    assert "/admin/history?object_type=adm.item&amp;code_name=Blue+%3Cchair%3E" in html

    # Applied again with the same values: it changed nothing, and says so.
    [same] = log_items(admin_bus, "Shop", ["Blue <chair>"], ref=1)
    assert admin_bus.process_tasks("Shop")["Shop"].applied == 1
    assert "changed nothing" in step(admin.get(f"/admin/tasks/{same}").text, "step-changes")

    # A deleted task keeps its page; an unknown one is 404.
    [gone] = log_items(admin_bus, "Shop", ["Old stool"])
    admin_bus.delete_task(gone)
    html = admin.get(f"/admin/tasks/{gone}").text
    assert 'data-testid="task-state">deleted<' in html
    assert "it was deleted before it was applied" in step(html, "step-changes")
    assert admin.get("/admin/tasks/999999").status_code == 404


def test_queued_task_page_shows_unresolved_translations_and_an_editor(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    task_id = make_failed_task(admin_bus, "Green lamp")
    html = admin.get(f"/admin/tasks/{task_id}").text
    assert 'data-testid="task-state">failed<' in html and "Synchronize now" in html
    assert "not resolved yet" in step(html, "step-translations")
    assert "Not applied yet." in step(html, "step-changes")
    editor = re.search(r'<textarea id="external-json"[^>]*>(.*?)</textarea>', html, re.S)
    assert editor and "&#34;name&#34;: &#34;Green lamp&#34;" in editor.group(1)


def test_the_edit_address_leads_back_to_the_task(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    """A refused Save leaves /admin/tasks/N/object in the browser; reloaded or bookmarked it
    must not answer a bare 405 (a new user's trial)."""
    task_id = make_failed_task(admin_bus, "Lamp")
    r = admin.get(f"/admin/tasks/{task_id}/object")
    assert r.status_code == 303 and r.headers["location"] == f"/admin/tasks/{task_id}"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"kind": "item", "name": "Blue chair",', "Not valid JSON: Expecting"),
        ("   ", "The external object is empty"),
        ('{"kind": "item", "name": "x", "value": NaN}', "Not valid JSON"),
        ('{"kind": "item"}', "The connector could not prepare the object: KeyError"),
        (
            '{"kind": "item", "name": "x", "value": "many"}',
            "column &#39;value&#39; of adm.item: the column holds int values",
        ),
    ],
)
def test_a_bad_edit_shows_its_error_and_changes_nothing(
    admin: httpx.Client, admin_bus: IntegrationBus, text: str, error: str
) -> None:
    task_id = make_failed_task(admin_bus, "Blue chair")
    before = admin_bus.task_history(task_id)
    for op in ("save", "save-sync"):
        r = edit(admin, task_id, text, op)
        assert r.status_code == 422
        shown = re.search(r'data-testid="editor-error"\s*>(.*?)</p>', r.text, re.S)
        assert shown and error in shown.group(1), r.text[-3000:]
        # The editor keeps what was typed, so it can be fixed.
        kept = re.search(
            r'<textarea id="external-json"[^>]*aria-invalid="true">\n(.*?)</textarea>', r.text, re.S
        )
        assert kept and kept.group(1) == text.replace('"', "&#34;")
    assert admin_bus.task_history(task_id) == before
    assert admin_bus.get_object("adm.item", "x") is None


def test_an_edit_needs_the_csrf_token_and_a_queued_task(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    task_id = make_failed_task(admin_bus, "Blue chair")
    before = admin_bus.task_history(task_id)
    fixed = '{"kind": "item", "name": "Blue chair"}'
    r = admin.post(f"/admin/tasks/{task_id}/object", data={"object": fixed, "op": "save"})
    assert r.status_code == 403 and admin_bus.task_history(task_id) == before
    admin_bus.delete_task(task_id)
    r = edit(admin, task_id, fixed)
    assert r.status_code == 303 and r.headers["location"] == f"/admin/tasks/{task_id}"
    assert "no longer queued" in admin.get(r.headers["location"]).text


def test_save_replaces_the_object_and_keeps_the_task_queued(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    task_id = make_failed_task(admin_bus, "Blue chair")
    r = edit(admin, task_id, '{"kind": "item", "name": "Blue chair", "value": 3}')
    assert r.status_code == 303 and r.headers["location"] == f"/admin/tasks/{task_id}"
    record = admin_bus.task_history(task_id)
    assert record is not None and record.external == {
        "kind": "item",
        "name": "Blue chair",
        "value": 3,
    }
    assert record.translations == [] and len(record.errors) == 1  # error history kept
    html = admin.get(r.headers["location"]).text
    assert "object was replaced; its connector" in html
    assert admin_bus.get_object("adm.item", "Blue chair") is None  # not run
    # Who replaced what (a new user's trial found no trace of the object an edit replaced).
    [event] = [e for e in admin_bus.event_log() if e.code == "REPLACETASK"]
    assert event.message.startswith(
        f"task {task_id}'s external object was replaced by Olivia in the admin UI from "
    )
    assert event.message.endswith('; it was: {"kind":"item","name":"Blue chair","value":0,"ref":1}')


def test_save_and_synchronize_applies_the_edit(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    task_id = make_failed_task(admin_bus, "Blue chair")
    r = edit(admin, task_id, '{"kind": "item", "name": "Blue chair", "value": 7}', "save-sync")
    assert r.status_code == 303 and r.headers["location"] == f"/admin/tasks/{task_id}"
    assert admin_bus.get_task(task_id) is None
    assert admin_bus.get_object("adm.item", "Blue chair")["value"] == 7  # type: ignore[index]
    html = admin.get(r.headers["location"]).text
    assert "object was replaced and the task was applied" in html
    assert 'data-testid="task-state">applied<' in html
    assert re.search(
        r"<code>value</code></td><td>.*?</td><td><code>7</code>", step(html, "step-changes")
    )
    assert "Cannot translate columns" in step(html, "step-errors")  # the history of the task

    # An edit that still fails is saved, and the outcome says it failed again.
    other = log_items(admin_bus, "Shop", ["Red table"])[0]
    r = edit(admin, other, '{"kind": "item", "name": "Red table", "ref": 9}', "save-sync")
    html = admin.get(r.headers["location"]).text
    assert "was replaced, but it failed again: Cannot translate columns ref_id" in html
    record = admin_bus.task_history(other)
    assert record is not None and record.state == "failed" and record.external["ref"] == 9


def test_synchronize_from_the_task_page_stays_on_it(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    [task_id] = log_items(admin_bus, "Refs", ["Oak shelf"])
    token = csrf_of(admin.get(f"/admin/tasks/{task_id}").text)
    r = admin.post(
        f"/admin/tasks/{task_id}/synchronize",
        data={"csrf_token": token, "back": f"/admin/tasks/{task_id}"},
    )
    assert r.status_code == 303 and r.headers["location"] == f"/admin/tasks/{task_id}"
    assert 'data-testid="task-state">applied<' in admin.get(r.headers["location"]).text


def test_object_history_lists_the_tasks_that_wrote_an_object(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    ids = []
    for value, task_type in ((1, TaskType.CREATE_OBJECT), (2, TaskType.UPDATE_OBJECT)):
        request = TaskRequest({"kind": "item", "name": "Lamp", "value": value}, task_type=task_type)
        ids.append(admin_bus.log_tasks("Refs", [request])[0].task_id)
        assert admin_bus.process_tasks("Refs")["Refs"].applied == 1
    log_items(admin_bus, "Refs", ["Other lamp"])
    admin_bus.process_tasks("Refs")
    page = admin.get("/admin/history")
    assert page.status_code == 200 and '<option value="adm.item"' in page.text
    assert '<option value="cms.userrole"' in page.text  # a binding: found by its two ends
    assert 'href="/admin/history"' in page.text  # in the navigation

    r = admin.get("/admin/history", params={"object_type": "adm.item", "code_name": "Lamp"})
    assert r.status_code == 200
    assert 'data-testid="history-count">\n  <strong>2</strong> tasks wrote adm.item' in r.text
    rows = re.findall(r'<tr id="record-(\d+)">', r.text)
    assert [int(i) for i in rows] == ids[::-1]  # newest first
    for task_id in ids:
        assert f'<a href="/admin/tasks/{task_id}">#{task_id}</a>' in r.text
    newest = r.text[r.text.index(f'id="record-{ids[1]}"') : r.text.index(f'id="record-{ids[0]}"')]
    assert "<code>value</code>: <code>1</code> → <code>2</code>" in newest

    r = admin.get("/admin/history", params={"object_type": "adm.item", "code_name": "Nothing"})
    assert r.status_code == 200 and "No task wrote this object" in r.text
    r = admin.get("/admin/history", params={"object_type": "no.such", "code_name": "Lamp"})
    assert r.status_code == 400 and 'data-testid="history-error"' in r.text
    r = admin.get("/admin/history", params={"object_type": "adm.item"})
    assert r.status_code == 400 and "type a code name" in r.text


def test_a_dropped_task_shows_the_error_that_dropped_it(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    request = TaskRequest(
        {"kind": "item", "name": "Lost", "ref": 4},
        process_type=ProcessType.DELETE_ON_ERROR,
        data_type=TaskDataType.SIMPLE_SNAPSHOT,
    )
    [outcome] = admin_bus.log_tasks("Shop", [request])
    admin_bus.process_tasks("Shop")
    assert admin_bus.get_task(outcome.task_id or 0) is None
    html = admin.get(f"/admin/tasks/{outcome.task_id}").text
    assert 'data-testid="task-state">dropped<' in html
    assert "dropped after an error" in html
    assert "it was dropped before it was applied" in step(html, "step-changes")
    assert "Cannot translate columns ref_id" in step(html, "step-errors")


class CoalescingShop(ShopConnector):
    connector_name = "Coalescing"
    coalesce = True


def test_a_coalesced_task_links_to_the_task_that_carried_it(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    admin_bus.register_connector(CoalescingShop)
    requests = [
        TaskRequest({"kind": "item", "name": "Mug", "value": 1}),
        TaskRequest({"kind": "item", "name": "Mug", "value": 2}, task_type=TaskType.UPDATE_OBJECT),
    ]
    first, last = (o.task_id for o in admin_bus.log_tasks("Coalescing", requests))
    assert admin_bus.process_tasks("Coalescing")["Coalescing"].coalesced == 1
    html = admin.get(f"/admin/tasks/{first}").text
    assert 'data-testid="task-state">coalesced<' in html
    assert f'<a href="/admin/tasks/{last}" data-testid="into-task">task #{last}</a>' in html
    assert f'its values were carried by <a href="/admin/tasks/{last}">' in step(
        html, "step-changes"
    )
    r = admin.get("/admin/history", params={"object_type": "adm.item", "code_name": "Mug"})
    assert [int(i) for i in re.findall(r'<tr id="record-(\d+)">', r.text)] == [last, first]
    assert f'into <a href="/admin/tasks/{last}">#{last}</a>' in r.text
    assert "carried 1 coalesced" in r.text
    carrier = admin.get(f"/admin/tasks/{last}").text
    assert "It carried the values of 1 earlier task of the same object" in carrier
    assert f'data-testid="carried-tasks"><a href="/admin/tasks/{first}">#{first}</a></span>' in (
        carrier
    )
